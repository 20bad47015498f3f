# Shared helpers of the guest-side lab tools (busybox sh). Sourced, not run.

LAB_TOOLS=${LAB_TOOLS:-/lab/tools}

# lab_pci_describe MODE NAME ADDR: prints what sysfs says about one PCI device, decoded by
# lab-pci-facts.awk (MODE json: one JSON line; MODE text: a few human-readable lines).
lab_pci_describe() {
  local mode=$1 name=$2 addr=$3 dev driver group members
  dev=/sys/bus/pci/devices/$addr
  driver=none
  [ -e "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
  group=-1 members=""
  if [ -e "$dev/iommu_group" ]; then
    group=$(basename "$(readlink "$dev/iommu_group")")
    members=$(ls "$dev/iommu_group/devices" | tr '\n' ' ')
  fi
  {
    sed 's/^/R /' "$dev/resource"
    od -An -v -tx1 "$dev/config" | sed 's/^/C /'
  } | awk -v mode="$mode" -v name="$name" -v addr="$addr" \
        -v vendor="$(cat "$dev/vendor")" -v device="$(cat "$dev/device")" \
        -v svendor="$(cat "$dev/subsystem_vendor")" -v sdevice="$(cat "$dev/subsystem_device")" \
        -v class="$(cat "$dev/class")" -v revision="$(cat "$dev/revision")" \
        -v driver="$driver" -v group="$group" -v group_devices="$members" \
        -v irq="$(cat "$dev/irq")" -f "$LAB_TOOLS/lab-pci-facts.awk"
}

# lab_each_device FUNCTION: calls FUNCTION NAME ADDR for every lab device (from LAB_DEVICES).
lab_each_device() {
  for entry in $LAB_DEVICES; do
    "$1" "${entry%%=*}" "${entry#*=}"
  done
}
