// edu_guest_check: runs inside a Linux guest whose edu device is served by the VMM (QEMU 11's
// vfio-user-pci attached to vfiod --device=sim:edu, or, as a control, QEMU's own edu). A static
// program with no dependencies; tests/vmm/run_guest_boot.sh boots it with tools/lab/lab.sh.
//
// The guest has no IOMMU, so a bus address is a guest-physical address. In order:
//   sysfs     the device by id (1234:11e8, anywhere), class, BAR0 (1 MiB memory) from
//             `resource`, the MSI capability in `config`, `enable`, bus mastering by a config
//             write
//   bar       BAR0 through an mmap of `resource0`: ident 0x010000ed, liveness, factorial 5 and
//             10, and the cost of a BAR read and a posted BAR write from a guest loop
//   dma       an edu DMA round trip: a pattern in a locked page (physical address from
//             /proc/self/pagemap) -> edu's buffer -> another page, compared
//   intx      the device bound to uio_pci_generic: two interrupts (one raised by a register
//             write, one by the factorial's completion) that the guest kernel handles, counted
//             in /proc/interrupts and delivered to /dev/uioN
//   vfio      (--vfio, needs an emulated IOMMU; booted with iommu=pt so the steps above still
//             see IOVA == guest-physical) the device rebound to vfio-pci: a type1 container,
//             a DMA round trip at IOVAs the guest maps with VFIO_IOMMU_MAP_DMA (so through the
//             vIOMMU: QEMU turns them into vfio-user DMA_MAPs), and an MSI delivered to an
//             eventfd, counted as vfio-msi in /proc/interrupts
// Before each interrupt test it prints `VMM-OBSERVE: intx-armed` / `VMM-OBSERVE: msi-armed` and
// waits (--hold-ms, default 1500) so the host can look at vfiod's state meanwhile.
//
// Output: one `EDU-CHECK: PASS|FAIL NAME detail` line per check, `EDU-TIMING: ...` lines, and
// `EDU-RESULT: PASS` or `EDU-RESULT: FAIL n=N`. Exit status 0 only when every check passed.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <string>

namespace {

constexpr unsigned kVendor = 0x1234, kDevice = 0x11e8;
constexpr uint32_t kRegIdent = 0x00, kRegLiveness = 0x04, kRegFactorial = 0x08,
                   kRegStatus = 0x20, kRegIrqStatus = 0x24, kRegIrqRaise = 0x60,
                   kRegIrqAck = 0x64, kRegDmaSrc = 0x80, kRegDmaDst = 0x88, kRegDmaCount = 0x90,
                   kRegDmaCmd = 0x98;
constexpr uint32_t kIdentValue = 0x010000ed;
constexpr uint64_t kEduBuffer = 0x40000;
constexpr uint64_t kDmaMask = (uint64_t{1} << 28) - 1;  // edu's default dma_mask
constexpr size_t kDmaBytes = 1024;
constexpr size_t kPage = 4096;

int failures = 0;
std::string dev_dir;  // /sys/bus/pci/devices/0000:00:04.0
std::string dev_addr;
volatile uint32_t* bar = nullptr;

void Check(bool ok, const char* name, const char* fmt, ...) {
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  printf("EDU-CHECK: %s %s %s\n", ok ? "PASS" : "FAIL", name, detail);
  fflush(stdout);
  if (!ok) failures++;
}

double NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

std::string ReadText(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) return "";
  char buf[4096];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  std::string s(buf);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool WriteText(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) return false;
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  return ok;
}

unsigned long Hex(const std::string& s) { return strtoul(s.c_str(), nullptr, 0); }

uint32_t Reg(uint32_t offset) { return bar[offset / 4]; }
void SetReg(uint32_t offset, uint32_t value) { bar[offset / 4] = value; }

// Polls BAR0 `offset` until (v & mask) == want, for up to `timeout_ms`.
bool PollReg(uint32_t offset, uint32_t mask, uint32_t want, int timeout_ms = 5000) {
  double deadline = NowUs() + timeout_ms * 1000.0;
  while ((Reg(offset) & mask) != want) {
    if (NowUs() > deadline) return false;
    usleep(100);
  }
  return true;
}

bool FindDevice() {
  DIR* d = opendir("/sys/bus/pci/devices");
  if (d == nullptr) return false;
  int found = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string dir = std::string("/sys/bus/pci/devices/") + e->d_name;
    if (Hex(ReadText(dir + "/vendor")) == kVendor && Hex(ReadText(dir + "/device")) == kDevice) {
      dev_dir = dir;
      dev_addr = e->d_name;
      found++;
    }
  }
  closedir(d);
  return found == 1;
}

// Reads/writes the device's config space through sysfs.
bool ConfigRead(uint32_t offset, void* out, size_t size) {
  int fd = open((dev_dir + "/config").c_str(), O_RDONLY);
  if (fd < 0) return false;
  bool ok = pread(fd, out, size, offset) == static_cast<ssize_t>(size);
  close(fd);
  return ok;
}

bool ConfigWrite16(uint32_t offset, uint16_t value) {
  int fd = open((dev_dir + "/config").c_str(), O_WRONLY);
  if (fd < 0) return false;
  bool ok = pwrite(fd, &value, 2, offset) == 2;
  close(fd);
  return ok;
}

void CheckSysfs() {
  Check(Hex(ReadText(dev_dir + "/class")) == 0x00ff00, "sysfs-class", "class=%s",
        ReadText(dev_dir + "/class").c_str());
  // resource: "start end flags" per BAR; BAR0 1 MiB of memory (IORESOURCE_MEM 0x200).
  unsigned long long start = 0, end = 0, flags = 0;
  FILE* f = fopen((dev_dir + "/resource").c_str(), "r");
  int n = f ? fscanf(f, "%llx %llx %llx", &start, &end, &flags) : 0;
  if (f) fclose(f);
  Check(n == 3 && start != 0 && end - start + 1 == (1u << 20) && (flags & 0x200) &&
            !(flags & 0x100000),
        "sysfs-bar0", "start=0x%llx size=0x%llx flags=0x%llx (32-bit memory, 1 MiB)", start,
        end - start + 1, flags);
  uint8_t config[256] = {};
  bool read_ok = ConfigRead(0, config, sizeof(config));
  uint32_t ids = config[0] | config[1] << 8 | config[2] << 16 | config[3] << 24;
  Check(read_ok && ids == (kDevice << 16 | kVendor), "sysfs-config-ids", "0x%08x", ids);
  // The capability list (status bit 4), walked from 0x34: MSI (id 5) with a 64-bit address.
  int msi_at = -1, steps = 0;
  for (uint8_t p = (config[0x06] & 0x10) ? config[0x34] & 0xfc : 0; p != 0 && steps < 48;
       p = config[p + 1] & 0xfc, ++steps) {
    if (config[p] == 0x05) msi_at = p;
  }
  uint16_t msi_control = msi_at >= 0 ? config[msi_at + 2] | config[msi_at + 3] << 8 : 0;
  Check(msi_at >= 0 && (msi_control & 0x80), "sysfs-msi-cap",
        "MSI capability at 0x%x, control 0x%04x (64-bit %s, %u vector(s))", msi_at, msi_control,
        (msi_control & 0x80) ? "yes" : "no", 1u << ((msi_control >> 1) & 7));
  Check(Hex(ReadText(dev_dir + "/irq")) != 0, "sysfs-irq", "INTx irq %s",
        ReadText(dev_dir + "/irq").c_str());
}

void CheckBar() {
  bool enabled = WriteText(dev_dir + "/enable", "1");
  uint16_t command = 0;
  ConfigRead(4, &command, 2);
  bool master = ConfigWrite16(4, command | 0x6);  // memory decode, bus master
  ConfigRead(4, &command, 2);
  Check(enabled && master && (command & 0x6) == 0x6, "enable", "command=0x%04x", command);

  int fd = open((dev_dir + "/resource0").c_str(), O_RDWR | O_SYNC);
  void* map = fd >= 0 ? mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                      : MAP_FAILED;
  if (fd >= 0) close(fd);
  Check(map != MAP_FAILED, "bar-mmap", "%s/resource0", dev_dir.c_str());
  if (map == MAP_FAILED) return;
  bar = static_cast<volatile uint32_t*>(map);

  Check(Reg(kRegIdent) == kIdentValue, "bar-ident", "0x%08x", Reg(kRegIdent));
  SetReg(kRegLiveness, 0x12345678);
  Check(Reg(kRegLiveness) == ~0x12345678u, "bar-liveness", "0x%08x", Reg(kRegLiveness));
  struct {
    uint32_t n, want;
  } facts[] = {{5, 120}, {10, 3628800}};
  for (auto [n, want] : facts) {
    SetReg(kRegFactorial, n);
    bool done = PollReg(kRegStatus, 0x1, 0);
    uint32_t got = Reg(kRegFactorial);
    Check(done && got == want, "bar-factorial", "%u! = %u", n, got);
  }

  constexpr int kReads = 2000;
  double t0 = NowUs();
  for (int i = 0; i < kReads; ++i) (void)Reg(kRegIdent);
  double read_us = (NowUs() - t0) / kReads;
  t0 = NowUs();
  for (int i = 0; i < kReads; ++i) SetReg(kRegLiveness, i);
  double write_us = (NowUs() - t0) / kReads;
  (void)Reg(kRegLiveness);  // flushes the posted writes
  printf("EDU-TIMING: bar-read %.1f us, bar-posted-write %.1f us (guest loop, %d each)\n",
         read_us, write_us, kReads);
}

// The physical address of the page at `virt` (root: /proc/self/pagemap shows PFNs).
uint64_t Physical(const void* virt) {
  int fd = open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return 0;
  uint64_t entry = 0;
  uintptr_t v = reinterpret_cast<uintptr_t>(virt);
  ssize_t n = pread(fd, &entry, 8, (v / kPage) * 8);
  close(fd);
  if (n != 8 || !(entry & (uint64_t{1} << 63))) return 0;
  return (entry & ((uint64_t{1} << 55) - 1)) * kPage + v % kPage;
}

bool Dma(uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd) {
  SetReg(kRegDmaSrc, static_cast<uint32_t>(src));
  SetReg(kRegDmaDst, static_cast<uint32_t>(dst));
  SetReg(kRegDmaCount, count);
  SetReg(kRegDmaCmd, cmd);
  return PollReg(kRegDmaCmd, 0x1, 0);
}

void CheckDma() {
  if (bar == nullptr) return;
  void* mem = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
  Check(mem != MAP_FAILED, "dma-buffer", "2 locked pages");
  if (mem == MAP_FAILED) return;
  volatile uint8_t* src = static_cast<uint8_t*>(mem);
  volatile uint8_t* dst = src + kPage;
  for (size_t i = 0; i < kDmaBytes; ++i) src[i] = static_cast<uint8_t>(i * 13 + 7 + (i >> 8));
  for (size_t i = 0; i < kPage; ++i) dst[i] = 0;
  uint64_t src_phys = Physical(const_cast<uint8_t*>(src));
  uint64_t dst_phys = Physical(const_cast<uint8_t*>(dst));
  Check(src_phys != 0 && dst_phys != 0 && src_phys + kDmaBytes <= kDmaMask &&
            dst_phys + kDmaBytes <= kDmaMask,
        "dma-pagemap", "source 0x%llx, destination 0x%llx (below edu's 28-bit DMA mask)",
        static_cast<unsigned long long>(src_phys), static_cast<unsigned long long>(dst_phys));
  if (src_phys == 0 || dst_phys == 0) return;
  double t0 = NowUs();
  bool to_device = Dma(src_phys, kEduBuffer, kDmaBytes, 0x1);
  bool to_ram = Dma(kEduBuffer, dst_phys, kDmaBytes, 0x3);
  double took = NowUs() - t0;
  __sync_synchronize();
  size_t mismatch = kDmaBytes;
  for (size_t i = 0; i < kDmaBytes; ++i) {
    if (dst[i] != src[i]) {
      mismatch = i;
      break;
    }
  }
  bool beyond_clean = dst[kDmaBytes] == 0;
  Check(to_device && to_ram && mismatch == kDmaBytes && beyond_clean, "dma-round-trip",
        "%zu bytes RAM->edu->RAM in %.1f ms, %s", kDmaBytes, took / 1000,
        mismatch == kDmaBytes ? "identical" : "first difference shown below");
  if (mismatch != kDmaBytes) {
    printf("  byte %zu: wrote 0x%02x, read back 0x%02x\n", mismatch, src[mismatch],
           dst[mismatch]);
  }
  munmap(mem, 2 * kPage);
}

// The sum over CPUs of /proc/interrupts' line for `irq`, and the line itself.
long InterruptCount(unsigned irq, std::string* line_out) {
  FILE* f = fopen("/proc/interrupts", "r");
  if (f == nullptr) return -1;
  char line[1024];
  long total = -1;
  char want[16];
  snprintf(want, sizeof(want), "%u:", irq);
  while (fgets(line, sizeof(line), f)) {
    char* p = line;
    while (*p == ' ') ++p;
    if (strncmp(p, want, strlen(want)) != 0) continue;
    total = 0;
    p += strlen(want);
    char* end;
    for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
      total += v;
      p = end;
    }
    if (line_out) {
      *line_out = line;
      while (!line_out->empty() && line_out->back() == '\n') line_out->pop_back();
    }
  }
  fclose(f);
  return total;
}

// uio_pci_generic's handler masks INTx with PCI_COMMAND_INTX_DISABLE; user space clears it with a
// config write (the driver has no irqcontrol: a write to /dev/uioN fails with ENOSYS).
bool UnmaskIntx() {
  uint16_t command = 0;
  if (!ConfigRead(4, &command, 2)) return false;
  return ConfigWrite16(4, command & ~0x400);
}

// Waits for one interrupt on /dev/uioN; returns uio's event count, or -1.
long WaitUio(int fd, int timeout_ms) {
  pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return -1;
  uint32_t count = 0;
  if (read(fd, &count, 4) != 4) return -1;
  return count;
}

void CheckIntx(int hold_ms) {
  if (bar == nullptr) return;
  int rc = system("modprobe uio_pci_generic");
  bool bound = rc == 0 && WriteText(dev_dir + "/driver_override", "uio_pci_generic") &&
               WriteText("/sys/bus/pci/drivers_probe", dev_addr);
  char link[256] = {};
  ssize_t n = readlink((dev_dir + "/driver").c_str(), link, sizeof(link) - 1);
  std::string driver = n > 0 ? std::string(link, n) : "";
  driver = driver.substr(driver.rfind('/') + 1);
  Check(bound && driver == "uio_pci_generic", "intx-bind", "driver %s", driver.c_str());
  if (driver != "uio_pci_generic") return;
  // /sys/.../uio/uioN -> /dev/uioN
  std::string uio;
  if (DIR* d = opendir((dev_dir + "/uio").c_str())) {
    while (dirent* e = readdir(d)) {
      if (strncmp(e->d_name, "uio", 3) == 0) uio = std::string("/dev/") + e->d_name;
    }
    closedir(d);
  }
  int fd = uio.empty() ? -1 : open(uio.c_str(), O_RDWR);
  Check(fd >= 0, "intx-uio", "%s", uio.c_str());
  if (fd < 0) return;
  unsigned irq = Hex(ReadText(dev_dir + "/irq"));
  std::string line;
  long before = InterruptCount(irq, &line);
  bool armed = UnmaskIntx();
  Check(armed && before >= 0, "intx-arm", "irq %u, /proc/interrupts before: %ld", irq, before);

  printf("VMM-OBSERVE: intx-armed irq=%u\n", irq);
  fflush(stdout);
  usleep(hold_ms * 1000);

  // 1: raised by a register write.
  double t0 = NowUs();
  SetReg(kRegIrqRaise, 0x1);
  long events = WaitUio(fd, 5000);
  double latency = NowUs() - t0;
  uint32_t status = Reg(kRegIrqStatus);
  Check(events >= 1 && status == 0x1, "intx-raise",
        "uio event %ld after %.0f us, edu interrupt status 0x%x", events, latency, status);
  SetReg(kRegIrqAck, 0x1);
  armed = UnmaskIntx();

  // 2: the factorial's completion interrupt (status bit 0x80).
  SetReg(kRegStatus, 0x80);
  SetReg(kRegFactorial, 6);
  long events2 = WaitUio(fd, 5000);
  status = Reg(kRegIrqStatus);
  uint32_t fact = Reg(kRegFactorial);
  Check(armed && events2 > events && status == 0x1 && fact == 720, "intx-factorial",
        "uio event %ld, interrupt status 0x%x, 6! = %u", events2, status, fact);
  SetReg(kRegIrqAck, 0x1);
  SetReg(kRegStatus, 0);

  long after = InterruptCount(irq, &line);
  Check(after >= before + 2, "intx-proc-interrupts", "%ld -> %ld: %s", before, after,
        line.c_str());
  close(fd);
}

// The line of /proc/interrupts whose name contains `name`, with its count summed over CPUs.
long InterruptCountByName(const char* name, std::string* line_out) {
  FILE* f = fopen("/proc/interrupts", "r");
  if (f == nullptr) return -1;
  char line[1024];
  long total = -1;
  while (fgets(line, sizeof(line), f)) {
    if (strstr(line, name) == nullptr) continue;
    char* p = strchr(line, ':');
    if (p == nullptr) continue;
    ++p;
    total = 0;
    char* end;
    for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
      total += v;
      p = end;
    }
    *line_out = line;
    while (!line_out->empty() && line_out->back() == '\n') line_out->pop_back();
    break;
  }
  fclose(f);
  return total;
}

void CheckVfio(int hold_ms) {
  // Rebind: uio_pci_generic (or no driver) -> vfio-pci.
  WriteText(dev_dir + "/driver/unbind", dev_addr);
  bool bound = WriteText(dev_dir + "/driver_override", "vfio-pci") &&
               WriteText("/sys/bus/pci/drivers_probe", dev_addr);
  char link[256] = {};
  ssize_t n = readlink((dev_dir + "/iommu_group").c_str(), link, sizeof(link) - 1);
  std::string group = n > 0 ? std::string(link, n) : "";
  group = group.substr(group.rfind('/') + 1);
  n = readlink((dev_dir + "/driver").c_str(), link, sizeof(link) - 1);
  std::string driver = n > 0 ? std::string(link, n) : "";
  driver = driver.substr(driver.rfind('/') + 1);
  Check(bound && driver == "vfio-pci" && !group.empty(), "vfio-bind", "driver %s, IOMMU group %s",
        driver.c_str(), group.c_str());
  if (driver != "vfio-pci" || group.empty()) return;

  int container = open("/dev/vfio/vfio", O_RDWR);
  int group_fd = open(("/dev/vfio/" + group).c_str(), O_RDWR);
  vfio_group_status status = {sizeof(status), 0};
  bool viable = group_fd >= 0 && ioctl(group_fd, VFIO_GROUP_GET_STATUS, &status) == 0 &&
                (status.flags & VFIO_GROUP_FLAGS_VIABLE);
  bool set = viable && ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, &container) == 0 &&
             ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0;
  int device = set ? ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, dev_addr.c_str()) : -1;
  Check(container >= 0 && viable && set && device >= 0, "vfio-open",
        "container, group %s (viable %d), type1v2, device fd %d", group.c_str(), viable, device);
  if (device < 0) return;
  vfio_region_info bar0 = {sizeof(bar0), 0, VFIO_PCI_BAR0_REGION_INDEX, 0, 0, 0};
  vfio_region_info cfg = {sizeof(cfg), 0, VFIO_PCI_CONFIG_REGION_INDEX, 0, 0, 0};
  bool regions = ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &bar0) == 0 &&
                 ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &cfg) == 0 && bar0.size == (1u << 20);
  auto rd = [&](uint32_t off) {
    uint32_t v = 0xffffffff;
    (void)!pread(device, &v, 4, bar0.offset + off);
    return v;
  };
  auto wr = [&](uint32_t off, uint32_t v) { (void)!pwrite(device, &v, 4, bar0.offset + off); };
  auto poll_clear = [&](uint32_t off, uint32_t mask) {
    double deadline = NowUs() + 5e6;
    while (rd(off) & mask) {
      if (NowUs() > deadline) return false;
      usleep(100);
    }
    return true;
  };
  // vfio-pci leaves bus mastering to the user (MSI is a bus-master write too).
  uint16_t command = 0;
  (void)!pread(device, &command, 2, cfg.offset + 4);
  command |= 0x6;
  bool master = pwrite(device, &command, 2, cfg.offset + 4) == 2;
  Check(regions && master && rd(kRegIdent) == kIdentValue, "vfio-regions",
        "BAR0 %llu bytes at fd offset 0x%llx, ident 0x%08x through the device fd",
        static_cast<unsigned long long>(bar0.size), static_cast<unsigned long long>(bar0.offset),
        rd(kRegIdent));

  // DMA at IOVAs of the guest's choosing: the vIOMMU maps them, QEMU tells vfiod.
  constexpr uint64_t kIova = 0x100000;
  void* mem = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  volatile uint8_t* src = static_cast<uint8_t*>(mem);
  volatile uint8_t* dst = src + kPage;
  for (size_t i = 0; i < kDmaBytes; ++i) src[i] = static_cast<uint8_t>(i ^ 0x5a);
  for (size_t i = 0; i < kPage; ++i) dst[i] = 0;
  vfio_iommu_type1_dma_map map = {sizeof(map), VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                                  reinterpret_cast<uintptr_t>(mem), kIova, 2 * kPage};
  bool mapped = ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0;
  bool ok = false;
  if (mapped) {
    wr(kRegDmaSrc, kIova);
    wr(kRegDmaDst, kEduBuffer);
    wr(kRegDmaCount, kDmaBytes);
    wr(kRegDmaCmd, 0x1);
    bool a = poll_clear(kRegDmaCmd, 0x1);
    wr(kRegDmaSrc, kEduBuffer);
    wr(kRegDmaDst, kIova + kPage);
    wr(kRegDmaCount, kDmaBytes);
    wr(kRegDmaCmd, 0x3);
    bool b = poll_clear(kRegDmaCmd, 0x1);
    __sync_synchronize();
    ok = a && b;
    for (size_t i = 0; ok && i < kDmaBytes; ++i) ok = dst[i] == src[i];
  }
  Check(mapped && ok, "vfio-dma", "MAP_DMA iova 0x%llx + 2 pages, %zu bytes RAM->edu->RAM %s",
        static_cast<unsigned long long>(kIova), kDmaBytes, ok ? "identical" : "differ");

  // MSI to an eventfd.
  int efd = eventfd(0, EFD_CLOEXEC);
  char buf[sizeof(vfio_irq_set) + sizeof(int)];
  auto* irq_set = reinterpret_cast<vfio_irq_set*>(buf);
  *irq_set = {sizeof(buf), VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
              VFIO_PCI_MSI_IRQ_INDEX, 0, 1};
  memcpy(irq_set->data, &efd, sizeof(int));
  bool msi = ioctl(device, VFIO_DEVICE_SET_IRQS, irq_set) == 0;
  std::string line;
  long before = InterruptCountByName("vfio-msi", &line);
  Check(msi && before >= 0, "vfio-msi-enable", "%s", line.c_str());
  printf("VMM-OBSERVE: msi-armed\n");
  fflush(stdout);
  usleep(hold_ms * 1000);
  double t0 = NowUs();
  wr(kRegIrqRaise, 0x1);
  pollfd p = {efd, POLLIN, 0};
  uint64_t count = 0;
  bool got = poll(&p, 1, 5000) == 1 && read(efd, &count, 8) == 8;
  double latency = NowUs() - t0;
  wr(kRegIrqAck, 0x1);
  long after = InterruptCountByName("vfio-msi", &line);
  Check(got && count >= 1 && after >= before + 1, "vfio-msi", "eventfd %llu after %.0f us; %s",
        static_cast<unsigned long long>(count), latency, line.c_str());
  close(efd);
  close(device);
  close(group_fd);
  close(container);
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  int hold_ms = 1500;
  bool vfio = false;
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "--hold-ms=", 10) == 0) hold_ms = atoi(argv[i] + 10);
    if (strcmp(argv[i], "--vfio") == 0) vfio = true;
  }
  bool found = FindDevice();
  Check(found, "find", "%04x:%04x at %s", kVendor, kDevice,
        found ? dev_addr.c_str() : "(not exactly one)");
  if (found) {
    CheckSysfs();
    CheckBar();
    CheckDma();
    CheckIntx(hold_ms);
    if (vfio) CheckVfio(hold_ms);
  }
  if (failures == 0) {
    printf("EDU-RESULT: PASS\n");
    return 0;
  }
  printf("EDU-RESULT: FAIL n=%d\n", failures);
  return 1;
}
