// A libFuzzer target for the device model: PciDevice over the simulated edu device (with reset
// support), driven by a sequence of operations with hostile arguments.
//
// Input format: a sequence of operations, each one selector byte followed by its arguments, read
// from the remaining bytes (a missing byte reads as 0). Arguments are biased toward interesting
// values (0, page-aligned, the MSI window, near 2^64, the bounds of existing mappings) by a
// choice byte before each value; see the Pick* helpers. The edu device really runs: region
// writes program its DMA engine and interrupt raise register, so with bus mastering on it DMAs
// through the IOVA mappings and signals the eventfds the harness gave it.
//
// After every operation, whatever the input, these must hold (a violation aborts):
//   - no crash, abort or undefined behaviour (ASan/UBSan under --config=fuzz);
//   - a mutating call that fails leaves Snapshot() unchanged (ignoring what the device's threads
//     change on their own: counters, delivered counts, INTx automask);
//   - mappings are sorted, never overlap, are page-aligned, lie inside one usable IOVA range and
//     inside registered memory, and each memory's mapping count is right; registered memory
//     stays within the limits;
//   - MapDma, UnmapDma and UnregisterMemory return exactly the status code that their contract
//     (daemon/pci/dma_space.h, and the simulated type1's RLIMIT_MEMLOCK charge) gives for the
//     state before the call (an independent model), and a successful call changes the state
//     exactly as described;
//   - a successful config or region access was a valid one; a non-eventfd is never adopted as
//     an eventfd.
// At the end of each input: ReleaseOwnerResources() leaves no memory, no mapping and no IRQ
// enabled, and the process's fd count returns to where it was (bounded wait: the simulated
// device's worker drops its eventfd copies asynchronously), once with the device still alive
// and again after it is destroyed.
//
// A fresh device is created for every input, so that every input reproduces on its own: an
// empty input (create, Start with its two threads, owner loss, destroy, four fd counts) costs
// about 380 µs under --config=fuzz (ASan's allocator and thread start-up dominate) and about
// 230 µs in the default build; a typical corpus input costs 2-3 ms, so a device kept per process
// (with state leaking between inputs) would buy little.
//
// The same source is a libFuzzer binary under --config=fuzz and, in the default build, a test
// that replays tests/fuzz/corpus/device_model through replay_main.cc. See tests/fuzz/README.md.
#include <dirent.h>
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/format.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/logging.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/pci_device.h"
#include "daemon/sim/edu_device.h"
#include "tests/fuzz/fuzz_device.h"
#include "tests/fuzz/fuzz_support.h"

namespace vfiod {
namespace {

using Edu = sim::EduDevice;  // the edu register map, defined once

using Code = absl::StatusCode;
using fuzz::CountFds;
using fuzz::ExpectFdCount;
using fuzz::MakeMemfd;
using fuzz::MakeNonEventfd;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kMax32 = std::numeric_limits<uint32_t>::max();
constexpr size_t kMaxOps = 256;

// edu's BAR0 registers (QEMU hw/misc/edu.c).
constexpr uint64_t kDmaBuffer = 0x40000;
constexpr uint64_t kEduRegs[] = {0x00,
                                 Edu::kRegLiveness,
                                 Edu::kRegFactorial,
                                 Edu::kRegStatus,
                                 Edu::kRegIrqStatus,
                                 Edu::kRegIrqRaise,
                                 Edu::kRegIrqAck,
                                 Edu::kRegDmaSrc,
                                 0x84,
                                 Edu::kRegDmaDst,
                                 Edu::kRegDmaCount,
                                 Edu::kRegDmaCmd};


// The operations, by selector byte (modulo kNumOps). Append only: the corpus depends on it.
enum Op : uint8_t {
  kReadConfig,
  kWriteConfig,
  kDumpConfig,
  kReadRegion,
  kWriteRegion,
  kRegisterMemory,
  kUnregisterMemory,
  kMapDma,
  kUnmapDma,
  kSetIrqs,
  kEduWrite,  // one 4-byte BAR0 register write
  kEduDma,    // src, dst, count, cmd in one go
  kWaitIdle,  // poll until edu's DMA and factorial units are idle (bounded)
  kReset,
  kOwnerLoss,  // ReleaseOwnerResources
  kSnapshot,
  kWatch,        // WatchIrqs / drain / drop
  kCommand,      // config write of the command register (memory decode, bus master, ...)
  kEventfdPoke,  // signal or read one of the harness's eventfds
  kFillMemory,   // write a pattern into registered memory through the harness's view
  kNumOps,
};

const char* OpName(uint8_t op) {
  static const char* const kNames[] = {
      "ReadConfig",     "WriteConfig", "DumpConfig", "ReadRegion",  "WriteRegion",
      "RegisterMemory", "Unregister",  "MapDma",     "UnmapDma",    "SetIrqs",
      "EduWrite",       "EduDma",      "WaitIdle",   "Reset",       "OwnerLoss",
      "Snapshot",       "Watch",       "Command",    "EventfdPoke", "FillMemory"};
  return op < kNumOps ? kNames[op] : "?";
}

// ---------------------------------------------------------------------------------------------
// The byte reader: little-endian values, zeros once the input is exhausted.

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return size_ == 0; }
  uint8_t U8() {
    if (size_ == 0) return 0;
    --size_;
    return *data_++;
  }
  uint64_t Le(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  // Up to `n` bytes of the input, as they are.
  absl::Span<const uint8_t> Take(size_t n) {
    n = std::min(n, size_);
    absl::Span<const uint8_t> out(data_, n);
    data_ += n;
    size_ -= n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// ---------------------------------------------------------------------------------------------
// State comparison and invariants.

// Everything in a snapshot that only a call can change (not the device's threads).
std::string StableState(const DeviceSnapshot& s) {
  std::string out;
  for (const MemoryInfo& m : s.memory)
    absl::StrAppend(&out, "mem ", m.id, "/", m.size, "/", m.mappings, "; ");
  for (const DmaMapRequest& m : s.mappings) {
    absl::StrAppend(&out, "map ", Hex(m.iova), "+", Hex(m.size), " id ", m.memory_id, "@",
                    Hex(m.offset), " ", m.device_read ? "r" : "", m.device_write ? "w" : "", "; ");
  }
  for (const IrqIndexState& irq : s.irqs) {
    absl::StrAppend(&out, "irq ", IrqIndexName(irq.index), irq.enabled ? " on" : " off", " [");
    for (const IrqVectorState& v : irq.vectors) {
      absl::StrAppend(&out, v.vector, ":", static_cast<int>(v.trigger),
                      // The watcher marks a watched INTx masked when it fires (automask).
                      irq.index == IrqIndex::kIntx ? "" : (v.masked ? "m" : ""),
                      v.unmask_eventfd ? "u" : "", " ");
    }
    absl::StrAppend(&out, "]; ");
  }
  return out;
}

struct Model {
  std::vector<IovaRange> usable;
  DeviceLimits limits;
  uint32_t max_mappings = 0;
  std::vector<IrqInfo> irqs;
};

bool InsideUsable(const Model& model, uint64_t iova, uint64_t last) {
  for (const IovaRange& r : model.usable) {
    if (r.start <= iova && last <= r.last) return true;
  }
  return model.usable.empty();
}

const MemoryInfo* FindMemory(const DeviceSnapshot& s, uint64_t id) {
  for (const MemoryInfo& m : s.memory) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

void CheckInvariants(const DeviceSnapshot& s, const Model& model) {
  uint64_t total = 0;
  uint64_t previous_id = 0;
  std::map<uint64_t, uint32_t> uses;
  for (const MemoryInfo& m : s.memory) {
    FUZZ_CHECK(m.id > previous_id, "memory ids not increasing: ", m.id);
    previous_id = m.id;
    FUZZ_CHECK(m.size > 0 && m.size % kPage == 0 && m.size <= kMiB, "memory ", m.id, " size ",
               Hex(m.size));
    total += m.size;
    uses[m.id] = 0;
  }
  FUZZ_CHECK(total <= model.limits.max_memory_bytes, "registered memory ", Hex(total),
             " exceeds the limit");
  FUZZ_CHECK(s.memory.size() <= model.limits.max_memory_regions, s.memory.size(),
             " memory regions");
  FUZZ_CHECK(s.mappings.size() <= model.max_mappings, s.mappings.size(), " mappings");
  bool first = true;
  uint64_t previous_last = 0;
  for (const DmaMapRequest& m : s.mappings) {
    FUZZ_CHECK(m.size > 0 && m.size % kPage == 0 && m.iova % kPage == 0 && m.offset % kPage == 0,
               "mapping ", Hex(m.iova), "+", Hex(m.size), " not page-aligned");
    FUZZ_CHECK(m.size - 1 <= kMax64 - m.iova, "mapping ", Hex(m.iova), " wraps");
    const uint64_t last = m.iova + (m.size - 1);
    FUZZ_CHECK(first || m.iova > previous_last, "mapping ", Hex(m.iova),
               " overlaps or is out of order after one ending at ", Hex(previous_last));
    first = false;
    previous_last = last;
    FUZZ_CHECK(InsideUsable(model, m.iova, last), "mapping ", Hex(m.iova), "..", Hex(last),
               " outside the usable IOVA ranges");
    FUZZ_CHECK(m.device_read || m.device_write, "mapping ", Hex(m.iova), " without permission");
    const MemoryInfo* memory = FindMemory(s, m.memory_id);
    FUZZ_CHECK(memory != nullptr, "mapping ", Hex(m.iova), " refers to unregistered memory ",
               m.memory_id);
    FUZZ_CHECK(m.offset <= memory->size && m.size <= memory->size - m.offset, "mapping ",
               Hex(m.iova), " beyond memory ", m.memory_id);
    ++uses[m.memory_id];
  }
  for (const MemoryInfo& m : s.memory) {
    FUZZ_CHECK(uses[m.id] == m.mappings, "memory ", m.id, " reports ", m.mappings, " mappings, ",
               uses[m.id], " exist");
  }
  for (const IrqIndexState& irq : s.irqs) {
    const uint32_t raw = static_cast<uint32_t>(irq.index);
    FUZZ_CHECK(raw < model.irqs.size() && irq.vectors.size() == model.irqs[raw].count, "IRQ index ",
               raw, " has ", irq.vectors.size(), " vectors");
    if (irq.enabled) continue;
    for (const IrqVectorState& v : irq.vectors) {
      FUZZ_CHECK(v.trigger == IrqVectorState::Trigger::kNone && !v.unmask_eventfd,
                 IrqIndexName(irq.index), " is disabled but vector ", v.vector,
                 " has a trigger or an unmask eventfd");
    }
  }
}

void CheckReleased(const DeviceSnapshot& s) {
  FUZZ_CHECK(s.memory.empty(), "owner loss left ", s.memory.size(), " memory regions");
  FUZZ_CHECK(s.mappings.empty(), "owner loss left ", s.mappings.size(), " mappings");
  for (const IrqIndexState& irq : s.irqs) {
    FUZZ_CHECK(!irq.enabled, "owner loss left ", IrqIndexName(irq.index), " enabled");
    for (const IrqVectorState& v : irq.vectors) {
      FUZZ_CHECK(v.trigger == IrqVectorState::Trigger::kNone && !v.masked && !v.unmask_eventfd,
                 "owner loss left state on ", IrqIndexName(irq.index), " vector ", v.vector);
    }
  }
}

// The contract of DmaSpace::MapDma (dma_space.h), independently: the code it must return.
Code ExpectedMapCode(const DmaMapRequest& r, const DeviceSnapshot& before, const Model& model) {
  if (r.size == 0) return Code::kInvalidArgument;
  if (!r.device_read && !r.device_write) return Code::kInvalidArgument;
  if (r.iova % kPage != 0 || r.size % kPage != 0 || r.offset % kPage != 0) {
    return Code::kInvalidArgument;
  }
  if (r.size - 1 > kMax64 - r.iova) return Code::kOutOfRange;
  if (r.size > kMax64 - r.offset) return Code::kOutOfRange;
  const MemoryInfo* memory = FindMemory(before, r.memory_id);
  if (memory == nullptr) return Code::kNotFound;
  if (r.offset > memory->size || r.size > memory->size - r.offset) return Code::kOutOfRange;
  const uint64_t last = r.iova + (r.size - 1);
  if (!InsideUsable(model, r.iova, last)) return Code::kOutOfRange;
  for (const DmaMapRequest& m : before.mappings) {
    if (m.iova <= last && r.iova <= m.iova + (m.size - 1)) return Code::kAlreadyExists;
  }
  if (before.mappings.size() >= model.max_mappings) return Code::kResourceExhausted;
  // The backend's type1 charge: every mapped byte counts against RLIMIT_MEMLOCK.
  uint64_t pinned = r.size;
  for (const DmaMapRequest& m : before.mappings) pinned += m.size;
  if (pinned > fuzz::kFuzzMemlockBytes) return Code::kResourceExhausted;
  return Code::kOk;
}

// DmaSpace::UnmapDma: the code, and on success what goes.
Code ExpectedUnmapCode(uint64_t iova, uint64_t size, const DeviceSnapshot& before,
                       UnmapResult* removed) {
  if (size == 0) return Code::kInvalidArgument;
  if (iova % kPage != 0 || size % kPage != 0) return Code::kInvalidArgument;
  if (size - 1 > kMax64 - iova) return Code::kOutOfRange;
  const uint64_t last = iova + (size - 1);
  bool any = false;
  for (const DmaMapRequest& m : before.mappings) {
    const uint64_t m_last = m.iova + (m.size - 1);
    if (m.iova > last || m_last < iova) continue;
    any = true;
    if (m.iova < iova || m_last > last) return Code::kInvalidArgument;
    removed->bytes += m.size;
    ++removed->mappings;
  }
  return any ? Code::kOk : Code::kNotFound;
}

// ---------------------------------------------------------------------------------------------
// The harness.

class Harness {
 public:
  Harness(std::unique_ptr<PciDevice> device, ByteReader reader)
      : device_(std::move(device)), r_(reader) {
    const DeviceDescription& d = device_->description();
    model_.usable = d.backend.iommu.usable_ranges;
    model_.limits = device_->limits();
    model_.max_mappings = model_.limits.max_dma_mappings;
    if (d.backend.iommu.dma_mappings_available != 0) {
      model_.max_mappings = std::min(model_.max_mappings, d.backend.iommu.dma_mappings_available);
    }
    model_.irqs = d.backend.irqs;
    fuzz::SetTrace(&trace_);
  }
  ~Harness() { fuzz::SetTrace(nullptr); }

  void Run(int fds_after_start) {
    for (size_t n = 0; n < kMaxOps && !r_.empty(); ++n) {
      const uint8_t op = r_.U8() % kNumOps;
      trace_.push_back(OpName(op));
      Step(op);
      CheckInvariants(device_->Snapshot(), model_);
    }
    if (std::getenv("DEVICE_MODEL_FUZZ_VERBOSE") != nullptr) {
      const DeviceSnapshot s = device_->Snapshot();
      std::fprintf(stderr, "  %zu operations; device: %llu interrupts, %llu DMA faults\n",
                   trace_.size(), static_cast<unsigned long long>(s.counters.interrupts),
                   static_cast<unsigned long long>(s.counters.dma_faults));
      for (const std::string& step : trace_) std::fprintf(stderr, "    %s\n", step.c_str());
      std::fprintf(stderr, "    state: %s\n", StableState(s).c_str());
    }
    // The end: the owner goes away; nothing may be left, no fd may leak.
    trace_.push_back("(end) OwnerLoss");
    subscriptions_.clear();
    device_->ReleaseOwnerResources();
    CheckReleased(device_->Snapshot());
    views_.clear();
    pool_.clear();
    ExpectFdCount(fds_after_start, "after owner loss");
  }

  PciDevice& device() { return *device_; }

 private:
  void Note(const std::string& text) { trace_.back() += " " + text; }

  // --- argument pickers -----------------------------------------------------------------------

  uint64_t PickIova(const DeviceSnapshot& s) {
    switch (r_.U8() % 11) {
      case 0:
        return 0;
      case 1:
        return uint64_t{r_.U16()} * kPage;  // below 256 MiB: reachable by edu's 28-bit DMA
      case 2:
        // The x86 MSI window and the pages around it.
        return 0xfee00000 + static_cast<uint64_t>(int64_t{static_cast<int8_t>(r_.U8())} * 4096);
      case 3: {
        const uint8_t k = r_.U8();
        const uint64_t half = k >> 1;
        return (k & 1) ? 0 - (half + 1) * kPage : kMax64 - half;
      }
      case 4:
        if (!s.mappings.empty()) {
          const DmaMapRequest& m = s.mappings[r_.U8() % s.mappings.size()];
          switch (r_.U8() % 5) {
            case 0:
              return m.iova;
            case 1:
              return m.iova + m.size;
            case 2:
              return m.iova + m.size - kPage;
            case 3:
              return m.iova - kPage;
            default:
              return m.iova + kPage;
          }
        }
        return r_.U32();
      case 5:
        return r_.U64();
      case 6:
        return (uint64_t{1} << 39) - uint64_t{r_.U8()} * kPage;
      case 7:
        return 0xfef00000 + uint64_t{r_.U8()} * kPage;
      case 8:
        return r_.U32();
      case 9:
        return 0x100000 + uint64_t{r_.U8()} * kPage;
      default:
        return (uint64_t{1} << 48) - uint64_t{r_.U8()} * kPage;
    }
  }

  uint64_t PickSize(const DeviceSnapshot& s) {
    switch (r_.U8() % 9) {
      case 0:
        return 0;
      case 1:
        return (uint64_t{r_.U8()} + 1) * kPage;
      case 2:
        return kPage;
      case 3:
        return 2 * kMiB;
      case 4:
        if (!s.memory.empty()) return s.memory[r_.U8() % s.memory.size()].size;
        return kMiB;
      case 5:
        return 0 - uint64_t{r_.U8()} * kPage;
      case 6:
        return r_.U64();
      case 7:
        if (!s.mappings.empty()) {
          const DmaMapRequest& a = s.mappings[r_.U8() % s.mappings.size()];
          const DmaMapRequest& b = s.mappings[r_.U8() % s.mappings.size()];
          return (r_.U8() & 1) ? a.size : (b.iova + b.size) - a.iova;  // a span of mappings
        }
        return 16 * kPage;
      default:
        return r_.U16();
    }
  }

  uint64_t PickOffset(const DeviceSnapshot& s) {
    switch (r_.U8() % 6) {
      case 0:
        return 0;
      case 1:
        return uint64_t{r_.U8()} * kPage;
      case 2:
        if (!s.memory.empty()) return s.memory[r_.U8() % s.memory.size()].size;
        return kMiB;
      case 3:
        return 0 - uint64_t{r_.U8()} * kPage;
      case 4:
        return r_.U64();
      default:
        return r_.U16();
    }
  }

  uint64_t PickMemoryId(const DeviceSnapshot& s) {
    switch (r_.U8() % 5) {
      case 0:
      case 1:
        if (!s.memory.empty()) return s.memory[r_.U8() % s.memory.size()].id;
        return next_id_hint_;
      case 2:
        return next_id_hint_;  // the next id, not yet issued
      case 3:
        return 0;
      default:
        return r_.U64();
    }
  }

  uint32_t PickU32Count() {
    switch (r_.U8() % 6) {
      case 0:
        return 0;
      case 1:
        return 1;
      case 2:
        return 2;
      case 3:
        return r_.U32();
      case 4:
        return kMax32 - r_.U8();
      default:
        return r_.U8();
    }
  }

  uint64_t PickRegionOffset() {
    switch (r_.U8() % 7) {
      case 0:
        return kEduRegs[r_.U8() % (sizeof(kEduRegs) / sizeof(kEduRegs[0]))];
      case 1:
        return r_.U16();
      case 2:
        return kMiB - r_.U8();
      case 3:
        return kMax64 - r_.U8();
      case 4:
        return r_.U64();
      case 5:
        return kDmaBuffer + r_.U16() % 4100;
      default:
        return r_.U32();
    }
  }

  uint64_t PickRegionSize() {
    switch (r_.U8() % 8) {
      case 0:
        return 4;
      case 1:
        return 1 + r_.U8() % 8;
      case 2:
        return r_.U16();
      case 3:
        return 64 * 1024;
      case 4:
        return 64 * 1024 + 1;
      case 5:
        return kMax64 - r_.U8();
      case 6:
        return 0;
      default:
        return r_.U64();
    }
  }

  uint32_t PickRegionIndex() {
    const uint8_t b = r_.U8();
    if (b < 0xc0) return b % 10;  // 7 is config, 8 VGA (absent), 9 beyond
    return r_.U32();
  }

  uint32_t PickConfigOffset() {
    switch (r_.U8() % 4) {
      case 0:
        return r_.U8();
      case 1:
        return r_.U16() % 0x1004;
      case 2:
        return r_.U32();
      default:
        return 0x40 + r_.U8() % 16;  // the MSI capability
    }
  }

  uint32_t PickConfigSize() {
    static const uint32_t kSizes[] = {1, 2, 4, 4, 0, 3, 8, 0xffffffff};
    return kSizes[r_.U8() % 8];
  }

  uint32_t PickValue32() {
    switch (r_.U8() % 5) {
      case 0:
        return r_.U8();
      case 1:
        return r_.U16();
      case 2:
        return 0xffffffff;
      case 3:
        return 0;
      default:
        return r_.U32();
    }
  }

  // --- helpers --------------------------------------------------------------------------------

  const EventFd* PoolFd(uint8_t which) {
    const size_t i = which % 4;
    while (pool_.size() <= i) {
      absl::StatusOr<EventFd> fd = EventFd::Create();
      FUZZ_CHECK(fd.ok(), "eventfd: ", fd.status().ToString());
      pool_.push_back(*std::move(fd));
    }
    return &pool_[i];
  }

  // One eventfd for a SET_IRQS request, as the service would produce it from a client's fd:
  // through EventFd::Adopt. nullopt in `*fd` removes a vector's trigger. False: the client's fd
  // was refused (as it must be), so the service would fail the request.
  bool MakeRequestEventfd(std::optional<EventFd>* fd) {
    const uint8_t kind = r_.U8();
    switch (kind % 6) {
      case 0:
        *fd = std::nullopt;
        return true;
      case 1:
      case 2:
      case 3: {
        absl::StatusOr<UniqueFd> copy = PoolFd(kind >> 4)->fd().Duplicate();
        FUZZ_CHECK(copy.ok(), copy.status().ToString());
        absl::StatusOr<EventFd> adopted = EventFd::Adopt(*std::move(copy));
        FUZZ_CHECK(adopted.ok(), "Adopt refused an eventfd: ", adopted.status().ToString());
        *fd = *std::move(adopted);
        return true;
      }
      case 4: {
        absl::StatusOr<EventFd> fresh = EventFd::Create();
        FUZZ_CHECK(fresh.ok(), fresh.status().ToString());
        *fd = *std::move(fresh);
        return true;
      }
      default: {
        UniqueFd other = MakeNonEventfd(kind >> 3);
        const int raw = other.get();
        absl::StatusOr<EventFd> adopted = EventFd::Adopt(std::move(other));
        FUZZ_CHECK(!adopted.ok(), "EventFd::Adopt accepted a non-eventfd (kind ", kind >> 3,
                   ", fd ", raw, ")");
        return false;
      }
    }
  }

  absl::Status Write32(uint64_t offset, uint32_t value) {
    uint8_t bytes[4];
    std::memcpy(bytes, &value, 4);
    return device_->WriteRegion(kBar0RegionIndex, offset, bytes);
  }

  absl::StatusOr<uint32_t> Read32(uint64_t offset) {
    absl::StatusOr<std::vector<uint8_t>> bytes = device_->ReadRegion(kBar0RegionIndex, offset, 4);
    if (!bytes.ok()) return bytes.status();
    FUZZ_CHECK(bytes->size() == 4, "ReadRegion returned ", bytes->size(), " bytes for 4");
    uint32_t value;
    std::memcpy(&value, bytes->data(), 4);
    return value;
  }

  // A mutating call that failed must leave the state as it was.
  void ExpectUnchanged(const std::string& before, const absl::Status& status) {
    const std::string after = StableState(device_->Snapshot());
    FUZZ_CHECK(after == before, "a failed call (", status.ToString(), ") changed the state:\n",
               "    before: ", before, "\n    after:  ", after);
  }

  // --- the operations -------------------------------------------------------------------------

  void Step(uint8_t op) {
    switch (op) {
      case kReadConfig: {
        const uint32_t offset = PickConfigOffset();
        const uint32_t size = PickConfigSize();
        Note(absl::StrCat(Hex(offset), " ", size));
        absl::StatusOr<uint32_t> value = device_->ReadConfig(offset, size);
        Note(value.ok() ? Hex(*value) : absl::StatusCodeToString(value.status().code()));
        if (value.ok()) {
          FUZZ_CHECK((size == 1 || size == 2 || size == 4) && offset % size == 0 &&
                         uint64_t{offset} + size <= 256,
                     "ReadConfig accepted offset ", Hex(offset), " size ", size);
          FUZZ_CHECK(size == 4 || *value >> (8 * size) == 0, "ReadConfig value too wide");
        }
        break;
      }
      case kWriteConfig: {
        const uint32_t offset = PickConfigOffset();
        const uint32_t size = PickConfigSize();
        const uint32_t value = PickValue32();
        Note(absl::StrCat(Hex(offset), " ", size, " ", Hex(value)));
        const std::string before = StableState(device_->Snapshot());
        absl::Status status = device_->WriteConfig(offset, size, value);
        Note(absl::StatusCodeToString(status.code()));
        if (status.ok()) {
          FUZZ_CHECK((size == 1 || size == 2 || size == 4) && offset % size == 0 &&
                         uint64_t{offset} + size <= 256 && (size == 4 || value >> (8 * size) == 0),
                     "WriteConfig accepted offset ", Hex(offset), " size ", size, " value ",
                     Hex(value));
        } else {
          ExpectUnchanged(before, status);
        }
        break;
      }
      case kDumpConfig: {
        const uint32_t offset = (r_.U8() & 1) ? r_.U32() : r_.U16() % 0x110;
        const uint32_t length = (r_.U8() & 1) ? r_.U32() : r_.U16() % 0x110;
        Note(absl::StrCat(Hex(offset), " ", length));
        absl::StatusOr<std::vector<uint8_t>> dump = device_->DumpConfig(offset, length);
        Note(absl::StatusCodeToString(dump.status().code()));
        if (dump.ok()) {
          FUZZ_CHECK(offset % 4 == 0 && length % 4 == 0 && offset < 256 &&
                         uint64_t{offset} + length <= 256,
                     "DumpConfig accepted ", Hex(offset), " ", length);
          FUZZ_CHECK(dump->size() == (length == 0 ? 256 - offset : length), "DumpConfig returned ",
                     dump->size(), " bytes");
        }
        break;
      }
      case kReadRegion: {
        const uint32_t index = PickRegionIndex();
        const uint64_t offset = PickRegionOffset();
        const uint64_t size = PickRegionSize();
        Note(absl::StrCat(index, " ", Hex(offset), " ", Hex(size)));
        absl::StatusOr<std::vector<uint8_t>> data = device_->ReadRegion(index, offset, size);
        Note(absl::StatusCodeToString(data.status().code()));
        if (data.ok() && size == 4) {
          uint32_t v;
          std::memcpy(&v, data->data(), 4);
          Note(Hex(v));
        }
        if (data.ok()) {
          FUZZ_CHECK(index == 0 && size >= 1 && size <= 64 * 1024 && offset <= kMiB &&
                         size <= kMiB - offset && data->size() == size,
                     "ReadRegion accepted ", index, " ", Hex(offset), " ", Hex(size));
        }
        break;
      }
      case kWriteRegion: {
        const uint32_t index = PickRegionIndex();
        const uint64_t offset = PickRegionOffset();
        uint64_t size = PickRegionSize();
        if (size > 64 * 1024 + 1) size = 64 * 1024 + 1;  // the buffer is real
        std::vector<uint8_t> data(size, 0);
        absl::Span<const uint8_t> bytes = r_.Take(std::min<uint64_t>(size, 64));
        std::copy(bytes.begin(), bytes.end(), data.begin());
        Note(absl::StrCat(index, " ", Hex(offset), " ", Hex(size)));
        const std::string before = StableState(device_->Snapshot());
        absl::Status status = device_->WriteRegion(index, offset, data);
        Note(absl::StatusCodeToString(status.code()));
        if (status.ok()) {
          FUZZ_CHECK(index == 0 && size >= 1 && size <= 64 * 1024 && offset <= kMiB &&
                         size <= kMiB - offset,
                     "WriteRegion accepted ", index, " ", Hex(offset), " ", Hex(size));
        } else {
          ExpectUnchanged(before, status);
        }
        break;
      }
      case kRegisterMemory:
        RegisterMemory();
        break;
      case kUnregisterMemory: {
        const DeviceSnapshot before = device_->Snapshot();
        const uint64_t id = PickMemoryId(before);
        Note(absl::StrCat(id));
        const MemoryInfo* memory = FindMemory(before, id);
        const Code expected = memory == nullptr      ? Code::kNotFound
                              : memory->mappings > 0 ? Code::kFailedPrecondition
                                                     : Code::kOk;
        const std::string stable = StableState(before);
        absl::Status status = device_->UnregisterMemory(id);
        Note(absl::StatusCodeToString(status.code()));
        FUZZ_CHECK(status.code() == expected, "UnregisterMemory(", id, "): ", status.ToString(),
                   ", expected ", absl::StatusCodeToString(expected));
        if (!status.ok()) {
          ExpectUnchanged(stable, status);
        } else {
          FUZZ_CHECK(FindMemory(device_->Snapshot(), id) == nullptr, "memory ", id, " still there");
          views_.erase(id);
        }
        break;
      }
      case kMapDma: {
        const DeviceSnapshot before = device_->Snapshot();
        DmaMapRequest map;
        map.iova = PickIova(before);
        map.size = PickSize(before);
        map.memory_id = PickMemoryId(before);
        map.offset = PickOffset(before);
        const uint8_t perms = r_.U8();
        map.device_read = (perms & 1) != 0 || (perms & 3) == 3;
        map.device_write = (perms & 2) != 0;
        Note(absl::StrCat(Hex(map.iova), " ", Hex(map.size), " id ", map.memory_id, " @",
                          Hex(map.offset), " ", map.device_read ? "r" : "-",
                          map.device_write ? "w" : "-"));
        const Code expected = ExpectedMapCode(map, before, model_);
        const std::string stable = StableState(before);
        absl::Status status = device_->MapDma(map);
        Note(absl::StatusCodeToString(status.code()));
        FUZZ_CHECK(status.code() == expected, "MapDma: ", status.ToString(), ", expected ",
                   absl::StatusCodeToString(expected));
        if (!status.ok()) {
          ExpectUnchanged(stable, status);
        } else {
          const DeviceSnapshot after = device_->Snapshot();
          FUZZ_CHECK(after.mappings.size() == before.mappings.size() + 1, "MapDma added ",
                     after.mappings.size() - before.mappings.size(), " mappings");
          bool found = false;
          for (const DmaMapRequest& m : after.mappings) {
            found |= m.iova == map.iova && m.size == map.size && m.memory_id == map.memory_id &&
                     m.offset == map.offset && m.device_read == map.device_read &&
                     m.device_write == map.device_write;
          }
          FUZZ_CHECK(found, "MapDma succeeded but the mapping is not as requested");
        }
        break;
      }
      case kUnmapDma: {
        const DeviceSnapshot before = device_->Snapshot();
        const uint64_t iova = PickIova(before);
        const uint64_t size = PickSize(before);
        Note(absl::StrCat(Hex(iova), " ", Hex(size)));
        UnmapResult expected_result;
        const Code expected = ExpectedUnmapCode(iova, size, before, &expected_result);
        const std::string stable = StableState(before);
        absl::StatusOr<UnmapResult> result = device_->UnmapDma(iova, size);
        Note(absl::StatusCodeToString(result.status().code()));
        FUZZ_CHECK(result.status().code() == expected, "UnmapDma: ", result.status().ToString(),
                   ", expected ", absl::StatusCodeToString(expected));
        if (!result.ok()) {
          ExpectUnchanged(stable, result.status());
        } else {
          FUZZ_CHECK(result->bytes == expected_result.bytes &&
                         result->mappings == expected_result.mappings,
                     "UnmapDma reported ", result->mappings, " mappings / ", Hex(result->bytes),
                     " bytes, expected ", expected_result.mappings, " / ",
                     Hex(expected_result.bytes));
          FUZZ_CHECK(device_->Snapshot().mappings.size() ==
                         before.mappings.size() - expected_result.mappings,
                     "UnmapDma left the wrong mappings");
        }
        break;
      }
      case kSetIrqs:
        SetIrqs();
        break;
      case kEduWrite: {
        const uint8_t which = r_.U8();
        const uint64_t offset = kEduRegs[which % (sizeof(kEduRegs) / sizeof(kEduRegs[0]))];
        const uint32_t value = PickValue32();
        Note(absl::StrCat(Hex(offset), " ", Hex(value)));
        Note(absl::StatusCodeToString(Write32(offset, value).code()));
        break;
      }
      case kEduDma:
        EduDma();
        break;
      case kWaitIdle:
        WaitIdle(r_.U8());
        break;
      case kReset: {
        const DeviceSnapshot snapshot = device_->Snapshot();
        const std::string before = StableState(snapshot);
        absl::Status status = device_->Reset();
        Note(absl::StatusCodeToString(status.code()));
        if (!status.ok()) {
          ExpectUnchanged(before, status);
        } else {
          // As VFIO_DEVICE_RESET: the interrupt configuration (enabled indexes, triggers) stays.
          const std::vector<IrqIndexState> after = device_->Snapshot().irqs;
          FUZZ_CHECK(after.size() == snapshot.irqs.size(), "Reset changed the IRQ indexes");
          for (size_t i = 0; i < after.size(); ++i) {
            FUZZ_CHECK(after[i].enabled == snapshot.irqs[i].enabled, "Reset turned ",
                       IrqIndexName(after[i].index), after[i].enabled ? " on" : " off");
            for (size_t v = 0; v < after[i].vectors.size() && v < snapshot.irqs[i].vectors.size();
                 ++v) {
              FUZZ_CHECK(after[i].vectors[v].trigger == snapshot.irqs[i].vectors[v].trigger,
                         "Reset changed the trigger of ", IrqIndexName(after[i].index), " vector ",
                         v);
            }
          }
        }
        break;
      }
      case kOwnerLoss:
        device_->ReleaseOwnerResources();
        CheckReleased(device_->Snapshot());
        views_.clear();
        break;
      case kSnapshot: {
        const DeviceSnapshot s = device_->Snapshot();
        FUZZ_CHECK(StableState(s) == StableState(device_->Snapshot()),
                   "two snapshots without a call differ");
        break;
      }
      case kWatch:
        Watch();
        break;
      case kCommand: {
        const uint8_t bits = r_.U8();
        uint32_t command = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        if (bits & 1) command &= ~uint32_t{PCI_COMMAND_MASTER};
        if (bits & 2) command &= ~uint32_t{PCI_COMMAND_MEMORY};
        if (bits & 4) command |= PCI_COMMAND_INTX_DISABLE;
        if (bits & 8) command |= PCI_COMMAND_IO | PCI_COMMAND_SERR;
        Note(Hex(command));
        absl::Status status = device_->WriteConfig(PCI_COMMAND, 2, command);
        FUZZ_CHECK(status.ok(), "command write: ", status.ToString());
        break;
      }
      case kEventfdPoke: {
        const uint8_t b = r_.U8();
        const EventFd* fd = PoolFd(b);
        if (b & 0x80) {
          (void)fd->Signal();
        } else {
          absl::StatusOr<uint64_t> count = fd->Read();
          FUZZ_CHECK(count.ok(), "eventfd read: ", count.status().ToString());
          Note(absl::StrCat("read ", *count));
        }
        break;
      }
      case kFillMemory: {
        if (views_.empty()) break;
        auto it = views_.begin();
        std::advance(it, r_.U8() % views_.size());
        const uint64_t offset = uint64_t{r_.U16()} * 16;
        absl::Span<const uint8_t> bytes = r_.Take(r_.U8() % 64);
        if (!bytes.empty()) {
          (void)!::pwrite(it->second.get(), bytes.data(), bytes.size(), static_cast<off_t>(offset));
        }
        break;
      }
      default:
        break;
    }
  }

  void RegisterMemory() {
    const uint8_t kind = r_.U8() % 8;
    uint64_t file_size;
    switch (r_.U8() % 5) {
      case 0:
        file_size = (uint64_t{r_.U8()} + 1) * kPage;
        break;  // up to 1 MiB
      case 1:
        file_size = r_.U32() % (kMiB + 1);
        break;
      case 2:
        file_size = 0;
        break;
      case 3:
        file_size = kMiB;
        break;
      default:
        file_size = 16 * kPage;
        break;
    }
    uint64_t size;
    switch (r_.U8() % 5) {
      case 0:
        size = 0;
        break;
      case 1:
        size = file_size;
        break;
      case 2:
        size = (uint64_t{r_.U8()} + 1) * kPage;
        break;
      case 3:
        size = kMax64 - kPage + 1;
        break;
      default:
        size = r_.U64();
        break;
    }
    UniqueFd fd;
    bool valid_kind = false;
    switch (kind) {
      case 0:
      case 1:
      case 2:
        fd = MakeMemfd(file_size, F_SEAL_SHRINK);
        valid_kind = true;
        break;
      case 3:
        fd = MakeMemfd(file_size, 0);  // unsealed
        break;
      case 4:
        fd = MakeMemfd(file_size, F_SEAL_SHRINK | F_SEAL_WRITE);
        break;
      case 5:
        fd = MakeMemfd(file_size, F_SEAL_SHRINK | F_SEAL_GROW);
        valid_kind = true;
        break;
      default: {
        const uint8_t other = r_.U8();
        fd = MakeNonEventfd(other % 8 == 2 ? 0 : other);  // not its memfd: that is memory
        break;
      }
    }
    Note(absl::StrCat("kind ", static_cast<int>(kind), " file ", Hex(file_size), " size ",
                      Hex(size)));
    // The harness keeps its own view of the memory (as a VMM does).
    UniqueFd view;
    if (valid_kind && fd.valid()) {
      absl::StatusOr<UniqueFd> copy = fd.Duplicate();
      if (copy.ok()) view = *std::move(copy);
    }
    const DeviceSnapshot before = device_->Snapshot();
    const std::string stable = StableState(before);
    const int raw = fd.get();
    absl::StatusOr<MemoryInfo> info = device_->RegisterMemory(std::move(fd), size);
    Note(info.ok() ? absl::StrCat("id ", info->id)
                   : absl::StatusCodeToString(info.status().code()));
    if (raw >= 0) {
      // "fd is closed either way" (unless a later fd took its number: only the view could).
      FUZZ_CHECK(::fcntl(raw, F_GETFD) < 0 || raw == view.get(), "RegisterMemory kept fd ", raw);
    }
    if (!info.ok()) {
      ExpectUnchanged(stable, info.status());
      return;
    }
    const uint64_t effective = size == 0 ? file_size : size;
    uint64_t total = 0;
    for (const MemoryInfo& m : before.memory) total += m.size;
    FUZZ_CHECK(valid_kind && effective > 0 && effective % kPage == 0 && effective <= file_size &&
                   before.memory.size() < model_.limits.max_memory_regions &&
                   total + effective <= model_.limits.max_memory_bytes,
               "RegisterMemory accepted kind ", static_cast<int>(kind), " file ", Hex(file_size),
               " size ", Hex(size));
    FUZZ_CHECK(info->size == effective && info->mappings == 0 && info->id >= next_id_hint_,
               "RegisterMemory returned id ", info->id, " size ", Hex(info->size));
    next_id_hint_ = info->id + 1;
    views_[info->id] = std::move(view);
  }

  void SetIrqs() {
    IrqRequest request;
    const uint8_t index = r_.U8();
    request.index = static_cast<IrqIndex>(index < 0xf0 ? index % 6 : r_.U32());
    request.start = (r_.U8() & 3) == 0 ? PickU32Count() : 0;
    request.count = PickU32Count();
    const uint8_t action = r_.U8();
    request.action = static_cast<IrqAction>(action < 0xf0 ? action % 3 : action);
    const uint8_t data = r_.U8();
    request.data = static_cast<IrqRequest::Data>(data < 0xf0 ? data % 4 : data);
    // Values: normally as many as `count` for the form that takes them, sometimes a mismatch.
    const uint8_t shape = r_.U8();
    const bool mismatch = (shape & 7) == 7;
    const bool wants_bools = request.data == IrqRequest::Data::kBool || (shape & 0x18) == 0x18;
    const bool wants_fds = request.data == IrqRequest::Data::kEventfd || (shape & 0x60) == 0x60;
    uint32_t n = request.count <= 8 ? request.count : r_.U8() % 4;
    if (mismatch) n = (shape & 8) ? n + 1 : (n > 0 ? n - 1 : 2);
    bool refused = false;
    if (wants_bools) {
      const uint8_t bits = r_.U8();
      for (uint32_t i = 0; i < n; ++i) request.bools.push_back(((bits >> (i % 8)) & 1) != 0);
    }
    if (wants_fds) {
      for (uint32_t i = 0; i < n; ++i) {
        std::optional<EventFd> fd;
        if (!MakeRequestEventfd(&fd)) refused = true;
        request.eventfds.push_back(std::move(fd));
      }
    }
    Note(absl::StrCat(IrqIndexName(request.index), " [", request.start, "+", request.count, ") ",
                      IrqActionName(request.action), " data ", static_cast<int>(request.data),
                      " bools ", request.bools.size(), " fds ", request.eventfds.size(),
                      refused ? " (an fd was refused)" : ""));
    if (refused) return;  // the service answers INVALID_ARGUMENT without calling the device
    const IrqIndex which = request.index;
    const IrqAction act = request.action;
    const IrqRequest::Data form = request.data;
    const uint32_t count = request.count;
    const uint32_t start = request.start;
    const std::string before = StableState(device_->Snapshot());
    absl::Status status = device_->SetIrqs(std::move(request));
    Note(absl::StatusCodeToString(status.code()));
    if (!status.ok()) {
      ExpectUnchanged(before, status);
      return;
    }
    // What success means.
    const uint32_t raw = static_cast<uint32_t>(which);
    FUZZ_CHECK(raw < model_.irqs.size() && model_.irqs[raw].count > 0, "SetIrqs accepted index ",
               raw);
    FUZZ_CHECK(count == 0 ? start == 0 : uint64_t{start} + count <= model_.irqs[raw].count,
               "SetIrqs accepted range [", start, "+", count, ")");
    for (const IrqIndexState& irq : device_->Snapshot().irqs) {
      if (irq.index != which || act != IrqAction::kTrigger) continue;
      if (count == 0) {
        FUZZ_CHECK(!irq.enabled, "disable left ", IrqIndexName(which), " enabled");
      } else if (form == IrqRequest::Data::kEventfd || form == IrqRequest::Data::kWatch) {
        // ERR and REQ are enabled exactly while their single trigger is set (an eventfd of -1
        // clears it, as in the kernel); INTx, MSI and MSI-X stay enabled without triggers.
        const bool single_trigger = which == IrqIndex::kErr || which == IrqIndex::kReq;
        const bool any_trigger = std::any_of(
            irq.vectors.begin(), irq.vectors.end(),
            [](const IrqVectorState& v) { return v.trigger != IrqVectorState::Trigger::kNone; });
        FUZZ_CHECK(irq.enabled == (!single_trigger || any_trigger), "setting triggers left ",
                   IrqIndexName(which), irq.enabled ? " enabled" : " disabled");
      }
    }
  }

  void EduDma() {
    const DeviceSnapshot s = device_->Snapshot();
    auto pick_ram = [&]() -> uint32_t {
      switch (r_.U8() % 4) {
        case 0:
          if (!s.mappings.empty()) {
            const DmaMapRequest& m = s.mappings[r_.U8() % s.mappings.size()];
            return static_cast<uint32_t>(m.iova + r_.U16() % (m.size + 64));
          }
          return 0x100000;
        case 1:
          return 0x100000 + r_.U16();
        case 2:
          return r_.U32();
        default:
          return kDmaBuffer + r_.U16() % 4200;
      }
    };
    const uint8_t flags = r_.U8();
    const bool to_ram = (flags & 1) != 0;
    const uint32_t ram = pick_ram();
    const uint32_t dev = (flags & 2) ? static_cast<uint32_t>(kDmaBuffer + r_.U16() % 4100)
                                     : static_cast<uint32_t>(kDmaBuffer);
    uint32_t count;
    switch (r_.U8() % 4) {
      case 0:
        count = 1 + r_.U8();
        break;
      case 1:
        count = 4096;
        break;
      case 2:
        count = r_.U32();
        break;
      default:
        count = r_.U16() % 4200;
        break;
    }
    const uint32_t cmd = 1 | (to_ram ? 2 : 0) | ((flags & 4) ? 4 : 0) | ((flags & 8) ? 0x10 : 0);
    Note(absl::StrCat(to_ram ? "dev->ram " : "ram->dev ", Hex(ram), " ", Hex(dev), " ", count,
                      " cmd ", Hex(cmd)));
    (void)Write32(Edu::kRegDmaSrc, to_ram ? dev : ram);
    (void)Write32(Edu::kRegDmaDst, to_ram ? ram : dev);
    (void)Write32(Edu::kRegDmaCount, count);
    (void)Write32(Edu::kRegDmaCmd, cmd);
    if (flags & 0x80) WaitIdle(0);
  }

  // Waits until edu's DMA and factorial units are idle, or a bound passes, then lets the
  // device's interrupt reach its eventfd.
  void WaitIdle(uint8_t extra) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      absl::StatusOr<uint32_t> cmd = Read32(Edu::kRegDmaCmd);
      absl::StatusOr<uint32_t> status = Read32(Edu::kRegStatus);
      if (!cmd.ok() || !status.ok()) break;  // memory decode off
      if ((*cmd & 1) == 0 && (*status & 1) == 0) {
        Note("idle");
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(10));
    }
    if (extra & 1) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  void Watch() {
    const uint8_t what = r_.U8() % 4;
    if (what == 0 || what == 1) {
      std::vector<IrqIndex> indexes;
      const uint8_t n = r_.U8() % 4;
      for (uint8_t i = 0; i < n; ++i) {
        const uint8_t b = r_.U8();
        indexes.push_back(static_cast<IrqIndex>(b < 0xf0 ? b % 6 : r_.U32()));
      }
      absl::StatusOr<std::shared_ptr<IrqSubscription>> sub = device_->WatchIrqs(indexes);
      Note(absl::StrCat("watch ", indexes.size(), ": ", sub.status().ToString()));
      if (sub.ok()) {
        FUZZ_CHECK(subscriptions_.size() < model_.limits.max_irq_watchers,
                   "WatchIrqs beyond the limit of ", model_.limits.max_irq_watchers);
        subscriptions_.push_back(*std::move(sub));
      } else if (sub.status().code() == Code::kResourceExhausted) {
        FUZZ_CHECK(subscriptions_.size() >= model_.limits.max_irq_watchers,
                   "WatchIrqs refused with ", subscriptions_.size(), " live");
      }
    } else if (what == 2) {
      for (const std::shared_ptr<IrqSubscription>& sub : subscriptions_) {
        for (int i = 0; i < 16; ++i) {
          std::optional<IrqEvent> event = sub->Next(absl::InfinitePast());
          if (!event.has_value()) break;
          FUZZ_CHECK(event->count > 0, "an IRQ event with count 0");
        }
      }
    } else if (!subscriptions_.empty()) {
      subscriptions_.erase(subscriptions_.begin() + r_.U8() % subscriptions_.size());
    }
  }

  std::unique_ptr<PciDevice> device_;
  ByteReader r_;
  Model model_;
  std::vector<std::string> trace_;
  std::vector<EventFd> pool_;
  std::map<uint64_t, UniqueFd> views_;  // memory id -> the harness's fd for it
  std::vector<std::shared_ptr<IrqSubscription>> subscriptions_;
  uint64_t next_id_hint_ = 1;
};


}  // namespace
}  // namespace vfiod

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool initialized = [] {
    vfiod::SetLogLevel(vfiod::LogLevel::kError);
    vfiod::fuzz::SetTargetName("device_model_fuzz");
    return true;
  }();
  (void)initialized;

  const int fds_before = vfiod::fuzz::CountFds();
  {
    std::unique_ptr<vfiod::PciDevice> device = vfiod::fuzz::MakeFuzzDevice();
    const int fds_after_start = vfiod::fuzz::CountFds();
    vfiod::Harness harness(std::move(device), vfiod::ByteReader(data, size));
    harness.Run(fds_after_start);
  }
  vfiod::fuzz::ExpectFdCount(fds_before, "after the device was destroyed");
  return 0;
}
