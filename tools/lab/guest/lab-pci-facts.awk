# Decodes what the guest kernel reports in sysfs about one PCI device (busybox awk).
# Used by lab-sysfs-facts (mode=json: one JSON object on one line) and lab-selftest (mode=text).
#
# Input lines, produced by lab_pci_describe in lab-lib.sh:
#   R <start> <end> <flags>    one line per line of the sysfs 'resource' file, in order
#   C <byte> <byte> ...        the sysfs 'config' file as hex bytes (od -An -v -tx1)
# Variables (-v): mode, name, addr, vendor, device, svendor, sdevice, class, revision, driver,
#   group, group_devices (space separated), irq.
#
# BAR flags are the kernel's IORESOURCE_* bits: IO 0x100, MEM 0x200, PREFETCH 0x2000,
# READONLY 0x4000, MEM_64 0x100000.

function hex(s,    i, c, v) {
  s = tolower(s)
  sub(/^0x/, "", s)
  v = 0
  for (i = 1; i <= length(s); i++) {
    c = index("0123456789abcdef", substr(s, i, 1))
    if (c == 0) break
    v = v * 16 + c - 1
  }
  return v
}
# busybox awk has no "^" (no math support): powers of two come from the table p2.
function bit(v, n) { return int(v / p2[n]) % 2 }
function bits(v, lo, n) { return int(v / p2[lo]) % p2[n] }
function u8(o) { return (o < ncfg) ? cfg[o] : 0 }
function u16(o) { return u8(o) + 256 * u8(o + 1) }
function u32(o) { return u16(o) + 65536 * u16(o + 2) }
function h(v, w) { return sprintf("0x%0" w "x", v) }
function jbool(v) { return v ? "true" : "false" }
function human(v) {
  if (v >= 1073741824 && v % 1073741824 == 0) return sprintf("%dG", v / 1073741824)
  if (v >= 1048576 && v % 1048576 == 0) return sprintf("%dM", v / 1048576)
  if (v >= 1024 && v % 1024 == 0) return sprintf("%dK", v / 1024)
  return sprintf("%d", v)
}
function cap_name(id) {
  return (id in capn) ? capn[id] : "unknown"
}
function ecap_name(id) {
  return (id in ecapn) ? ecapn[id] : "unknown"
}
function jlist(s,    n, a, i, out) {
  n = split(s, a, " ")
  out = ""
  for (i = 1; i <= n; i++) out = out (i > 1 ? "," : "") "\"" a[i] "\""
  return "[" out "]"
}

BEGIN {
  nres = 0; ncfg = 0
  p2[0] = 1
  for (i = 1; i <= 52; i++) p2[i] = p2[i - 1] * 2
  capn[1] = "pm"; capn[2] = "agp"; capn[3] = "vpd"; capn[4] = "slot-id"; capn[5] = "msi"
  capn[6] = "hotswap"; capn[7] = "pcix"; capn[8] = "ht"; capn[9] = "vendor"; capn[10] = "debug"
  capn[11] = "cpci"; capn[12] = "hotplug"; capn[13] = "ssvid"; capn[14] = "agp3"
  capn[15] = "secure"; capn[16] = "pcie"; capn[17] = "msix"; capn[18] = "sata"; capn[19] = "af"
  capn[20] = "ea"
  ecapn[1] = "aer"; ecapn[2] = "vc"; ecapn[3] = "dsn"; ecapn[4] = "power"; ecapn[5] = "rclink"
  ecapn[6] = "rcilc"; ecapn[7] = "rcec"; ecapn[8] = "mfvc"; ecapn[9] = "vc9"; ecapn[10] = "rcrb"
  ecapn[11] = "vsec"; ecapn[12] = "cac"; ecapn[13] = "acs"; ecapn[14] = "ari"; ecapn[15] = "ats"
  ecapn[16] = "sriov"; ecapn[17] = "mriov"; ecapn[18] = "mcast"; ecapn[19] = "pri"
  ecapn[21] = "rebar"; ecapn[22] = "dpa"; ecapn[23] = "tph"; ecapn[24] = "ltr"
  ecapn[25] = "secpcie"; ecapn[27] = "pasid"; ecapn[29] = "dpc"; ecapn[30] = "l1ss"
  ecapn[31] = "ptm"; ecapn[35] = "dvsec"; ecapn[37] = "dlf"; ecapn[38] = "pl16gt"
}
$1 == "R" { rs[nres] = $2; re[nres] = $3; rf[nres] = $4; nres++; next }
$1 == "C" { for (i = 2; i <= NF; i++) cfg[ncfg++] = hex($i); next }

END {
  # BARs (resource lines 0-5) and the expansion ROM (line 6).
  bars = ""; btext = ""
  for (i = 0; i < nres && i <= 6; i++) {
    s = hex(rs[i]); e = hex(re[i]); f = hex(rf[i])
    if (e == 0 && s == 0) continue
    size = e - s + 1
    if (i == 6) {
      rom = sprintf("{\"start\":\"%s\",\"size\":%.0f,\"flags\":\"%s\"}", rs[i], size, rf[i])
      btext = btext sprintf(" ROM=%s", human(size))
      continue
    }
    io = bit(f, 8); m64 = bit(f, 20); pf = bit(f, 13)
    type = io ? "io" : "mem"
    bars = bars (bars == "" ? "" : ",") \
      sprintf("{\"index\":%d,\"start\":\"%s\",\"end\":\"%s\",\"size\":%.0f,\"flags\":\"%s\",\"type\":\"%s\",\"mem64\":%s,\"prefetchable\":%s}", \
              i, rs[i], re[i], size, rf[i], type, jbool(m64), jbool(pf))
    btext = btext sprintf(" BAR%d=%s%s%s:%s", i, type, io ? "" : (m64 ? "64" : "32"), pf ? "-pref" : "", human(size))
  }
  if (rom == "") rom = "null"

  # Standard capabilities (status bit 4), at most 48 of them.
  caps = ""; ctext = ""; msi = "null"; msix = "null"; pcie = "null"
  if (ncfg >= 64 && bit(u16(6), 4)) {
    p = u8(52)
    for (n = 0; p >= 64 && p < 256 && n < 48; n++) {
      p = p - p % 4
      id = u8(p)
      caps = caps (caps == "" ? "" : ",") sprintf("{\"id\":\"%s\",\"name\":\"%s\",\"offset\":\"%s\"}", h(id, 2), cap_name(id), h(p, 2))
      ctext = ctext (ctext == "" ? "" : ",") sprintf("%s@%s", cap_name(id), h(p, 2))
      if (id == 5) {
        mc = u16(p + 2)
        msi = sprintf("{\"offset\":\"%s\",\"vectors\":%d,\"vectors_enabled\":%d,\"enabled\":%s,\"address64\":%s,\"per_vector_mask\":%s}", \
                      h(p, 2), p2[bits(mc, 1, 3)], p2[bits(mc, 4, 3)], jbool(bit(mc, 0)), jbool(bit(mc, 7)), jbool(bit(mc, 8)))
        ctext = ctext sprintf("(%d)", p2[bits(mc, 1, 3)])
      } else if (id == 17) {
        mc = u16(p + 2); t = u32(p + 4); pb = u32(p + 8)
        msix = sprintf("{\"offset\":\"%s\",\"table_size\":%d,\"enabled\":%s,\"table_bar\":%d,\"table_offset\":\"%s\",\"pba_bar\":%d,\"pba_offset\":\"%s\"}", \
                       h(p, 2), bits(mc, 0, 11) + 1, jbool(bit(mc, 15)), t % 8, h(t - t % 8, 1), pb % 8, h(pb - pb % 8, 1))
        ctext = ctext sprintf("(%d,bar%d)", bits(mc, 0, 11) + 1, t % 8)
      } else if (id == 16) {
        fl = u16(p + 2)
        pcie = sprintf("{\"offset\":\"%s\",\"version\":%d,\"device_type\":%d}", h(p, 2), bits(fl, 0, 4), bits(fl, 4, 4))
      }
      p = u8(p + 1)
    }
  }

  # Extended capabilities (config space beyond 256 bytes), at most 480 of them.
  ecaps = ""; etext = ""
  if (ncfg > 256) {
    p = 256
    for (n = 0; p >= 256 && p < ncfg && n < 480; n++) {
      hd = u32(p)
      if (hd == 0 || hd == 4294967295) break
      id = bits(hd, 0, 16)
      ecaps = ecaps (ecaps == "" ? "" : ",") sprintf("{\"id\":\"%s\",\"name\":\"%s\",\"version\":%d,\"offset\":\"%s\"}", h(id, 4), ecap_name(id), bits(hd, 16, 4), h(p, 3))
      etext = etext (etext == "" ? "" : ",") sprintf("%s@%s", ecap_name(id), h(p, 3))
      p = bits(hd, 20, 12)
      p = p - p % 4
    }
  }

  if (mode == "text") {
    printf "%-12s %s %s:%s class=%s rev=%s group=%s driver=%s\n", name, addr, substr(vendor, 3), substr(device, 3), class, revision, group, driver
    printf "%-12s  bars:%s\n", "", btext == "" ? " none" : btext
    printf "%-12s  caps: %s\n", "", ctext == "" ? "none" : ctext
    printf "%-12s  ext caps: %s\n", "", etext == "" ? "none" : etext
    exit 0
  }

  hexcfg = ""
  for (i = 0; i < ncfg; i++) hexcfg = hexcfg sprintf("%02x", cfg[i])
  printf "{\"name\":\"%s\",\"address\":\"%s\",\"vendor\":\"%s\",\"device\":\"%s\",", name, addr, vendor, device
  printf "\"subsystem_vendor\":\"%s\",\"subsystem_device\":\"%s\",\"class\":\"%s\",\"revision\":\"%s\",", svendor, sdevice, class, revision
  printf "\"driver\":\"%s\",\"iommu_group\":%d,\"iommu_group_devices\":%s,\"irq\":%d,", driver, group, jlist(group_devices), irq
  printf "\"bars\":[%s],\"rom\":%s,", bars, rom
  printf "\"capabilities\":[%s],\"ext_capabilities\":[%s],\"msi\":%s,\"msix\":%s,\"pcie\":%s,", caps, ecaps, msi, msix, pcie
  printf "\"config_size\":%d,\"config\":\"%s\"}\n", ncfg, hexcfg
}
