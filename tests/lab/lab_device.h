// The VM lab's devices as the guest kernel reports them (tests/lab/guest_suite.sh runs the tests
// that use this inside the lab's guest): the device list from $LAB_DEVICES, the sysfs facts of one
// device (ids, resources, raw config space and its capability lists), and the kernel's vfio
// interrupt lines in /proc/interrupts. Shared by zoo_test and qemu_real_test.
#ifndef VFIOD_TESTS_LAB_LAB_DEVICE_H_
#define VFIOD_TESTS_LAB_LAB_DEVICE_H_

#include <stdlib.h>

#include <cctype>
#include <cstdint>
#include <fstream>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace vfiod::lab {

// IORESOURCE_* bits of sysfs `resource` lines.
constexpr uint64_t kIoresourceIo = 0x100;
constexpr uint64_t kIoresourcePrefetch = 0x2000;
constexpr uint64_t kIoresourceMem64 = 0x100000;

struct LabDevice {
  std::string name;
  std::string address;
};

// gtest prints the parameter of a failed test with this.
inline void PrintTo(const LabDevice& device, std::ostream* os) {
  *os << device.name << "=" << device.address;
}

inline std::vector<LabDevice> LabDevicesFromEnv() {
  std::vector<LabDevice> devices;
  const char* env = getenv("LAB_DEVICES");
  if (env == nullptr) return devices;
  for (absl::string_view item : absl::StrSplit(env, ' ', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    devices.push_back(LabDevice{kv.first, kv.second});
  }
  return devices;
}

inline std::string Env(const char* name, const std::string& fallback) {
  const char* value = getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

inline absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline absl::StatusOr<uint64_t> ReadHexFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  uint64_t value;
  if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(*text), &value)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a hex number: ", *text));
  }
  return value;
}

struct SysfsResource {
  uint64_t start = 0, end = 0, flags = 0;
  uint64_t size() const { return (start == 0 && end == 0) ? 0 : end - start + 1; }
};

struct Cap {
  uint32_t id = 0, offset = 0, version = 0;
  bool operator==(const Cap& o) const {
    return id == o.id && offset == o.offset && version == o.version;
  }
};

inline std::ostream& operator<<(std::ostream& os, const Cap& cap) {
  return os << absl::StrCat("{id 0x", absl::Hex(cap.id), " at 0x", absl::Hex(cap.offset),
                            cap.version != 0 ? absl::StrCat(" v", cap.version) : "", "}");
}

// What the guest kernel reports for one device.
struct SysfsFacts {
  uint32_t vendor = 0, device = 0, subsystem_vendor = 0, subsystem_device = 0;
  uint32_t class_code = 0, revision = 0;
  std::vector<SysfsResource> resources;  // BAR0..BAR5, ROM
  std::string config;                    // every byte sysfs returns (256 or 4096)

  uint32_t Config8(uint32_t at) const {
    return at < config.size() ? static_cast<uint8_t>(config[at]) : 0;
  }
  uint32_t Config16(uint32_t at) const { return Config8(at) | Config8(at + 1) << 8; }
  uint32_t Config32(uint32_t at) const { return Config16(at) | Config16(at + 2) << 16; }

  // The standard capability list, as the kernel's pci_find_capability walks it.
  std::vector<Cap> Capabilities() const {
    std::vector<Cap> caps;
    if ((Config16(0x06) & 0x10) == 0) return caps;
    uint32_t at = Config8(0x34) & 0xfc;
    for (int ttl = 48; at >= 0x40 && ttl > 0; --ttl) {
      const uint32_t id = Config8(at);
      if (id == 0xff) break;
      caps.push_back(Cap{id, at, 0});
      at = Config8(at + 1) & 0xfc;
    }
    return caps;
  }
  std::vector<Cap> ExtendedCapabilities() const {
    std::vector<Cap> caps;
    if (config.size() <= 0x100) return caps;
    uint32_t at = 0x100;
    for (int ttl = (4096 - 256) / 8; ttl > 0 && at >= 0x100; --ttl) {
      const uint32_t header = Config32(at);
      if (header == 0 || header == 0xffffffff) break;
      caps.push_back(Cap{header & 0xffff, at, (header >> 16) & 0xf});
      at = (header >> 20) & 0xffc;
      if (at == 0) break;
    }
    return caps;
  }
  std::optional<uint32_t> FindCap(uint32_t id) const {
    for (const Cap& cap : Capabilities()) {
      if (cap.id == id) return cap.offset;
    }
    return std::nullopt;
  }
  uint32_t MsixVectors() const {
    std::optional<uint32_t> at = FindCap(0x11);
    return at ? (Config16(*at + 2) & 0x7ff) + 1 : 0;
  }
  uint32_t MsiVectors() const {
    std::optional<uint32_t> at = FindCap(0x05);
    return at ? 1u << ((Config16(*at + 2) >> 1) & 7) : 0;
  }
};

inline absl::StatusOr<SysfsFacts> ReadSysfs(const std::string& address) {
  const std::string dir = "/sys/bus/pci/devices/" + address + "/";
  SysfsFacts facts;
  struct {
    const char* file;
    uint32_t* into;
  } ids[] = {{"vendor", &facts.vendor},
             {"device", &facts.device},
             {"subsystem_vendor", &facts.subsystem_vendor},
             {"subsystem_device", &facts.subsystem_device},
             {"class", &facts.class_code},
             {"revision", &facts.revision}};
  for (const auto& id : ids) {
    absl::StatusOr<uint64_t> value = ReadHexFile(dir + id.file);
    if (!value.ok()) return value.status();
    *id.into = static_cast<uint32_t>(*value);
  }
  absl::StatusOr<std::string> resource = ReadFile(dir + "resource");
  if (!resource.ok()) return resource.status();
  for (absl::string_view line : absl::StrSplit(*resource, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    SysfsResource r;
    if (fields.size() != 3 || !absl::SimpleHexAtoi(fields[0], &r.start) ||
        !absl::SimpleHexAtoi(fields[1], &r.end) || !absl::SimpleHexAtoi(fields[2], &r.flags)) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "resource: bad line ", line));
    }
    facts.resources.push_back(r);
    if (facts.resources.size() == 7) break;
  }
  if (facts.resources.size() != 7) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "resource: fewer than 7 lines"));
  }
  absl::StatusOr<std::string> config = ReadFile(dir + "config");
  if (!config.ok()) return config.status();
  facts.config = *config;
  return facts;
}

// The lines of /proc/interrupts naming vfio interrupts of `address` ("vfio-msix[3](0000:..)").
std::vector<std::string> KernelVfioIrqs(const std::string& address) {
  std::vector<std::string> lines;
  absl::StatusOr<std::string> text = ReadFile("/proc/interrupts");
  if (!text.ok()) return lines;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (absl::StrContains(line, "vfio-") && absl::StrContains(line, "(" + address + ")")) {
      lines.emplace_back(absl::StripAsciiWhitespace(line));
    }
  }
  return lines;
}

inline size_t CountContaining(const std::vector<std::string>& lines, absl::string_view what) {
  size_t n = 0;
  for (const std::string& line : lines) n += absl::StrContains(line, what) ? 1 : 0;
  return n;
}

// A gtest parameter name for a device ("pci-testdev" -> "pci_testdev").
inline std::string DeviceTestName(const ::testing::TestParamInfo<LabDevice>& info) {
  std::string name = info.param.name;
  for (char& c : name) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

}  // namespace vfiod::lab

#endif  // VFIOD_TESTS_LAB_LAB_DEVICE_H_
