// A libFuzzer target for vfiod's vfio-user endpoint: the message stream (framing, fds riding
// with messages) and the session (every command) over the device model, as one connection
// thread of VfioUserServer runs them, driven by the bytes and fds hostile clients send.
//
// The input is a serialized vfiod.fuzz.VfioUserFuzzInput (tests/fuzz/vfio_user_fuzz.proto):
// steps on up to three connections, each a message (header fields and payload the fuzzer's,
// with real fds of the kinds it names: sealed or unsealed memfds, eventfds, pipes, sockets,
// others, the same memfd again), a batch of messages in one sendmsg, raw bytes followed by the
// end of the stream, or the connection's close.
//
// Each connection is a socketpair: the harness writes to one end as the client, and on the
// other runs vfio_user::MessageStream and vfio_user::VfioUserSession with the loop of
// VfioUserServer::Serve (non-command messages ignored, No_reply honoured, the connection ended
// on broken framing or when the session says so), in this thread. Deterministic: a step's bytes
// are all written before the server side reads, and only as many messages are read as were
// sent complete (raw bytes end the stream, so reading never blocks). The sessions, the DMA
// windows and owner loss are the daemon's: a SessionManager and an OwnerCleanup with the
// device's releases and the windows' release registered as VfioUserServer registers it.
//
// After every message the server handled, whatever the input (a violation aborts):
//   - the reply (unless No_reply was asked) arrives on the client's end, whole and alone: same
//     id and command, the reply type, the error flag exactly when the session failed, then an
//     errno in 1..133 and no payload; nothing arrives for a posted command or a non-command;
//   - a successful reply's payload is the command's (sizes, argsz, echoed fields, values the
//     device describes), and the state shows what it did (a window mapped or gone);
//   - a failed command, and a successful read-only one, leaves the state unchanged: the device
//     snapshot (memory, mappings, IRQ configuration; not what the device's threads change:
//     delivered counts, INTx's automask), config space (but the status register), the DMA
//     windows and the owner;
//   - the DMA windows and the device agree: every window with an fd is a device mapping of the
//     same range, every mapping is a window's, and all registered memory is a window's;
//   - only a connection that negotiated owns the device; one that failed VERSION is closed.
// At the end every connection closes: no owner, memory, mapping, enabled IRQ index, window or
// bus mastering may remain, and once the device is destroyed the fd count is where it was.
//
// Built like the other targets (tests/fuzz/README.md): a libFuzzer binary under --config=fuzz;
// in the default build //tests/fuzz:vfio_user_fuzz_test replays the seeds (text protos in
// tests/fuzz/seeds/vfio_user, encoded at build time) and tests/fuzz/corpus/vfio_user.
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/format.h"
#include "daemon/base/logging.h"
#include "daemon/base/owner_cleanup.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/vfio_user/dma_windows.h"
#include "daemon/vfio_user/message_stream.h"
#include "daemon/vfio_user/protocol.h"
#include "daemon/vfio_user/vfio_user_server.h"
#include "daemon/vfio_user/vfio_user_session.h"
#include "google/protobuf/stubs/logging.h"
#include "tests/fuzz/fuzz_device.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/vfio_user/vfio_user_client.h"
#include "tests/fuzz/vfio_user_fuzz.pb.h"

namespace vfiod {
namespace {

using vfio_user::Command;
using vfio_user::Header;

constexpr int kConnections = 3;
constexpr uid_t kOwnerUid = 0;
constexpr uid_t kObserverOnlyUid = 1000;  // connection 2: not in the owner set
constexpr int kMaxSteps = 96;
constexpr size_t kMaxFdsPerSend = 24;    // above the server's 16: the excess path is reachable
constexpr uint32_t kMaxMemfdPages = 512;
constexpr size_t kMaxMessagePayload = 72 * 1024;  // just above the server's largest message
constexpr size_t kMaxSendBytes = 96 * 1024;       // one step's bytes: never blocks the socket
constexpr size_t kMaxBatch = 16;
constexpr uint32_t kMaxErrno = 133;  // EHWPOISON, the largest errno Linux defines
// Edu's config space is 256 bytes; the status register (offset 6) changes when the device
// interrupts, from its own thread.
constexpr uint32_t kStatusOffset = PCI_STATUS;

template <typename T>
void Append(std::vector<uint8_t>& bytes, const T& value) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&value);
  bytes.insert(bytes.end(), p, p + sizeof(T));
}

template <typename T>
T Read(const std::vector<uint8_t>& bytes, size_t offset = 0) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

struct Connection {
  bool open = false;
  ConnectionId id = 0;
  UniqueFd client;  // the harness's end
  UniqueFd server;  // the daemon's end
  std::unique_ptr<vfio_user::MessageStream> stream;
  std::unique_ptr<vfio_user::VfioUserSession> session;
  uint16_t next_id = 1;
};

// A message as the harness built it: bytes, and what it expects of the server.
struct Built {
  std::vector<uint8_t> bytes;
  std::vector<UniqueFd> fds;
  std::string description;
};

class Harness {
 public:
  Harness()
      : device_(fuzz::MakeFuzzDevice()),
        sessions_(&cleanup_, SessionOptions{{kOwnerUid}, 64, nullptr}),
        windows_(device_.get()),
        limits_(vfio_user::LimitsFor(*device_)) {
    device_->RegisterOwnerCleanup(cleanup_);
    // As VfioUserServer's constructor does.
    cleanup_.Register(OwnerCleanup::Stage::kDma, "vfio-user DMA windows",
                      [this] { windows_.Clear(); });
    max_message_bytes_ = vfio_user::MaxMessageBytes(limits_);
    fuzz::SetTrace(&trace_);
  }
  ~Harness() { fuzz::SetTrace(nullptr); }

  void Run(const fuzz::VfioUserFuzzInput& input) {
    int n = 0;
    for (const fuzz::VfioUserStep& step : input.steps()) {
      if (++n > kMaxSteps) break;
      Step(step);
      CheckConsistent("after a step");
    }
    for (int i = 0; i < kConnections; ++i) End(i, "the input ended");
    if (std::getenv("VFIO_USER_FUZZ_VERBOSE") != nullptr) {
      for (const std::string& line : trace_) std::fprintf(stderr, "%s\n", line.c_str());
    }
    const DeviceSnapshot snapshot = device_->Snapshot();
    FUZZ_CHECK(!sessions_.GetSummary().owner_attached, "an owner is left after every connection");
    FUZZ_CHECK(snapshot.memory.empty() && snapshot.mappings.empty(),
               "memory or mappings left after every connection closed: ", snapshot.memory.size(),
               " memory, ", snapshot.mappings.size(), " mappings");
    for (const IrqIndexState& irq : snapshot.irqs) {
      FUZZ_CHECK(!irq.enabled, "IRQ index ", static_cast<int>(irq.index),
                 " is left enabled after every connection closed");
    }
    FUZZ_CHECK(windows_.List().empty(), windows_.List().size(),
               " DMA windows left after every connection closed");
    absl::StatusOr<uint32_t> command = device_->ReadConfig(PCI_COMMAND, 2);
    FUZZ_CHECK(command.ok() && (*command & PCI_COMMAND_MASTER) == 0,
               "bus mastering is left on after every connection closed");
  }

 private:
  // ---- connections ----

  Connection& Open(int i) {
    Connection& c = connections_[i];
    if (c.open) return c;
    int pair[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0, "socketpair: ",
               std::strerror(errno));
    c = Connection();
    c.open = true;
    c.id = next_connection_id_++;
    c.client.Reset(pair[0]);
    c.server.Reset(pair[1]);
    c.stream = std::make_unique<vfio_user::MessageStream>(c.server, max_message_bytes_,
                                                          limits_.max_msg_fds);
    c.session = std::make_unique<vfio_user::VfioUserSession>(device_.get(), &sessions_,
                                                             &windows_, c.id, limits_);
    sessions_.OnConnectionOpened(
        c.id, PeerCredentials{static_cast<pid_t>(100 + i), i == 2 ? kObserverOnlyUid : kOwnerUid, 0},
        /*spawn_owner=*/false);
    trace_.push_back(absl::StrCat("  connection ", i, " opened (session ", c.id, ")"));
    return c;
  }

  // The server side ends the connection (as Serve does when its loop ends), then the client's
  // end closes.
  void End(int i, const std::string& reason) {
    Connection& c = connections_[i];
    if (!c.open) return;
    const bool owner = sessions_.RoleOf(c.id) == SessionRole::kOwner;
    sessions_.OnConnectionClosed(c.id);
    c.session.reset();
    c.stream.reset();
    c.server.Reset();
    c.client.Reset();
    c.open = false;
    trace_.push_back(absl::StrCat("  connection ", i, " ended: ", reason,
                                  owner ? " (owner loss)" : ""));
    FUZZ_CHECK(!owner || !sessions_.GetSummary().owner_attached,
               "the owner's connection ended and an owner remains");
    CheckConsistent("after a connection ended");
  }

  // ---- fds ----

  UniqueFd MakeFd(const fuzz::VfioUserFd& spec) {
    const uint32_t pages = std::clamp(spec.pages(), 1u, kMaxMemfdPages);
    UniqueFd fd;
    switch (spec.kind()) {
      case fuzz::VfioUserFd::SEALED_MEMFD:
      case fuzz::VfioUserFd::UNSEALED_MEMFD: {
        fd = fuzz::MakeMemfd(uint64_t{pages} * 4096,
                             spec.kind() == fuzz::VfioUserFd::SEALED_MEMFD ? F_SEAL_SHRINK : 0);
        FUZZ_CHECK(fd.valid(), "the harness could not make a memfd");
        absl::StatusOr<UniqueFd> copy = fd.Duplicate();
        FUZZ_CHECK(copy.ok(), "dup: ", copy.status().ToString());
        memfds_.push_back(*std::move(copy));
        return fd;
      }
      case fuzz::VfioUserFd::EVENTFD:
        fd.Reset(::eventfd(0, EFD_CLOEXEC));
        break;
      case fuzz::VfioUserFd::PIPE:
        fd = fuzz::MakeNonEventfd(spec.variant() % 2);
        break;
      case fuzz::VfioUserFd::SOCKET: {
        int pair[2];
        FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0,
                   "socketpair: ", std::strerror(errno));
        ::close(pair[1]);
        fd.Reset(pair[0]);
        break;
      }
      case fuzz::VfioUserFd::MEMFD_AGAIN:
        if (!memfds_.empty()) {
          absl::StatusOr<UniqueFd> copy = memfds_[spec.variant() % memfds_.size()].Duplicate();
          FUZZ_CHECK(copy.ok(), "dup: ", copy.status().ToString());
          return *std::move(copy);
        }
        fd = fuzz::MakeMemfd(4096, F_SEAL_SHRINK);
        break;
      default:
        fd = fuzz::MakeNonEventfd(static_cast<uint8_t>(spec.variant() % 7));
        break;
    }
    FUZZ_CHECK(fd.valid(), "the harness could not make an fd of kind ", spec.kind());
    return fd;
  }

  std::string FdNames(const google::protobuf::RepeatedPtrField<fuzz::VfioUserFd>& fds) {
    if (fds.empty()) return "";
    std::string names = " fds [";
    for (const fuzz::VfioUserFd& fd : fds) {
      absl::StrAppend(&names, fuzz::VfioUserFd::Kind_Name(fd.kind()), " ");
    }
    names.back() = ']';
    return names;
  }

  // ---- building messages ----

  std::vector<uint8_t> Payload(const fuzz::VfioUserMessage& m) {
    std::vector<uint8_t> p;
    switch (m.payload_case()) {
      case fuzz::VfioUserMessage::kRaw:
        p.assign(m.raw().begin(), m.raw().end());
        break;
      case fuzz::VfioUserMessage::kVersion: {
        Append(p, static_cast<uint16_t>(m.version().major()));
        Append(p, static_cast<uint16_t>(m.version().minor()));
        p.insert(p.end(), m.version().json().begin(), m.version().json().end());
        if (!m.version().json().empty() && !m.version().no_nul()) p.push_back(0);
        break;
      }
      case fuzz::VfioUserMessage::kDmaMap: {
        const fuzz::VfioUserDmaMap& d = m.dma_map();
        vfio_user::DmaMapPayload map{d.has_argsz() ? d.argsz() : 32, d.flags(), d.offset(),
                                     d.address(), d.size()};
        Append(p, map);
        break;
      }
      case fuzz::VfioUserMessage::kDmaUnmap: {
        const fuzz::VfioUserDmaUnmap& d = m.dma_unmap();
        vfio_user::DmaUnmapPayload unmap{d.has_argsz() ? d.argsz() : 24, d.flags(), d.address(),
                                         d.size()};
        Append(p, unmap);
        break;
      }
      case fuzz::VfioUserMessage::kDeviceInfo: {
        vfio_user::DeviceInfoPayload info = {};
        info.argsz = m.device_info().has_argsz() ? m.device_info().argsz() : sizeof(info);
        Append(p, info);
        break;
      }
      case fuzz::VfioUserMessage::kRegionInfo: {
        vfio_region_info info = {};
        info.argsz = m.region_info().has_argsz() ? m.region_info().argsz() : sizeof(info);
        info.index = m.region_info().index();
        Append(p, info);
        break;
      }
      case fuzz::VfioUserMessage::kRegionIoFds: {
        const fuzz::VfioUserIoFds& d = m.region_io_fds();
        vfio_user::RegionIoFdsPayload io{d.has_argsz() ? d.argsz() : 16, d.flags(), d.index(),
                                         d.count()};
        Append(p, io);
        break;
      }
      case fuzz::VfioUserMessage::kIrqInfo: {
        vfio_irq_info info = {};
        info.argsz = m.irq_info().has_argsz() ? m.irq_info().argsz() : sizeof(info);
        info.index = m.irq_info().index();
        Append(p, info);
        break;
      }
      case fuzz::VfioUserMessage::kSetIrqs: {
        const fuzz::VfioUserSetIrqs& d = m.set_irqs();
        vfio_irq_set set = {};
        set.argsz = d.has_argsz() ? d.argsz()
                                  : static_cast<uint32_t>(sizeof(set) + d.data().size() +
                                                          m.trailing().size());
        set.flags = d.flags();
        set.index = d.index();
        set.start = d.start();
        set.count = d.count();
        Append(p, set);
        p.insert(p.end(), d.data().begin(), d.data().end());
        break;
      }
      case fuzz::VfioUserMessage::kRegionAccess: {
        const fuzz::VfioUserRegionAccess& d = m.region_access();
        vfio_user::RegionAccessPayload access{d.offset(), d.region(), d.count()};
        Append(p, access);
        const size_t fill = std::min<size_t>(d.fill(), kMaxMessagePayload);
        if (fill == 0) {
          p.insert(p.end(), d.data().begin(), d.data().end());
        } else {
          for (size_t i = 0; i < fill; ++i) {
            p.push_back(d.data().empty() ? 0 : static_cast<uint8_t>(d.data()[i % d.data().size()]));
          }
        }
        break;
      }
      case fuzz::VfioUserMessage::PAYLOAD_NOT_SET:
        break;
    }
    p.insert(p.end(), m.trailing().begin(), m.trailing().end());
    if (p.size() > kMaxMessagePayload) p.resize(kMaxMessagePayload);
    return p;
  }

  // One message's bytes; its fds are appended to `fds`.
  std::vector<uint8_t> Build(Connection& c, const fuzz::VfioUserMessage& m,
                             std::vector<UniqueFd>& fds) {
    const std::vector<uint8_t> payload = Payload(m);
    Header header{};
    header.message_id =
        m.has_message_id() ? static_cast<uint16_t>(m.message_id()) : c.next_id++;
    header.command = static_cast<uint16_t>(m.command());
    header.message_size = static_cast<uint32_t>(sizeof(Header) + payload.size());
    header.flags = m.flags();
    header.error = m.error();
    std::vector<uint8_t> bytes;
    Append(bytes, header);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    for (const fuzz::VfioUserFd& spec : m.fds()) {
      if (fds.size() < kMaxFdsPerSend) fds.push_back(MakeFd(spec));
    }
    trace_.push_back(absl::StrCat("    sends id ", header.message_id, " ",
                                  vfio_user::CommandName(header.command), " (", header.command,
                                  ") flags ", Hex(header.flags), ", ", payload.size(),
                                  " payload bytes", FdNames(m.fds()), ": ",
                                  m.ShortDebugString().substr(0, 300)));
    return bytes;
  }

  void Send(Connection& c, const std::vector<uint8_t>& bytes, const std::vector<UniqueFd>& fds) {
    if (bytes.empty()) return;  // fds need a byte to ride with: the kernel refuses none
    std::vector<int> numbers;
    for (const UniqueFd& fd : fds) numbers.push_back(fd.get());
    const ssize_t n = testing::SendWithFds(c.client.get(), bytes, numbers, MSG_DONTWAIT);
    FUZZ_CHECK(n == static_cast<ssize_t>(bytes.size()), "the harness's sendmsg of ",
               bytes.size(), " bytes and ", fds.size(), " fds sent ", n, ": ",
               n < 0 ? std::strerror(errno) : "short");
  }

  // ---- the state ----

  // What only commands change, as text (for comparison and failure messages).
  std::string StableState() {
    const DeviceSnapshot s = device_->Snapshot();
    std::string out = "memory:";
    for (const MemoryInfo& m : s.memory) absl::StrAppend(&out, " ", m.id, "/", Hex(m.size), "/", m.mappings);
    absl::StrAppend(&out, "; mappings:");
    for (const DmaMapRequest& m : s.mappings) {
      absl::StrAppend(&out, " ", Hex(m.iova), "+", Hex(m.size), "@", m.memory_id, ":",
                      Hex(m.offset), m.device_read ? "r" : "", m.device_write ? "w" : "");
    }
    absl::StrAppend(&out, "; irqs:");
    for (const IrqIndexState& irq : s.irqs) {
      absl::StrAppend(&out, " [", static_cast<int>(irq.index), irq.enabled ? " on" : " off");
      for (const IrqVectorState& v : irq.vectors) {
        absl::StrAppend(&out, " v", v.vector, " t", static_cast<int>(v.trigger),
                        irq.index == IrqIndex::kIntx ? "" : (v.masked ? " m" : " u"),
                        v.unmask_eventfd ? " ue" : "");
      }
      absl::StrAppend(&out, "]");
    }
    absl::StrAppend(&out, "; windows:");
    for (const vfio_user::DmaWindow& w : windows_.List()) {
      absl::StrAppend(&out, " ", Hex(w.address), "+", Hex(w.size), ":", Hex(w.offset),
                      w.readable ? "r" : "", w.writable ? "w" : "", "@",
                      w.memory_id.has_value() ? absl::StrCat(*w.memory_id) : "-");
    }
    absl::StatusOr<std::vector<uint8_t>> config = device_->DumpConfig(0, 0);
    FUZZ_CHECK(config.ok(), "DumpConfig: ", config.status().ToString());
    std::vector<uint8_t> bytes = *config;
    if (bytes.size() >= kStatusOffset + 2) bytes[kStatusOffset] = bytes[kStatusOffset + 1] = 0;
    absl::StrAppend(&out, "; config:");
    for (uint8_t b : bytes) absl::StrAppend(&out, absl::Hex(b, absl::kZeroPad2));
    const SessionManager::Summary summary = sessions_.GetSummary();
    absl::StrAppend(&out, "; owner: ", summary.owner_attached);
    return out;
  }

  // The DMA windows and the device agree.
  void CheckConsistent(const char* when) {
    const DeviceSnapshot s = device_->Snapshot();
    const std::vector<vfio_user::DmaWindow> windows = windows_.List();
    std::set<uint64_t> window_memory;
    size_t with_fd = 0;
    for (const vfio_user::DmaWindow& w : windows) {
      if (!w.memory_id.has_value()) continue;
      ++with_fd;
      window_memory.insert(*w.memory_id);
      bool mapped = false;
      for (const DmaMapRequest& m : s.mappings) {
        mapped |= m.iova == w.address && m.size == w.size && m.memory_id == *w.memory_id &&
                  m.offset == w.offset && m.device_read == w.readable &&
                  m.device_write == w.writable;
      }
      FUZZ_CHECK(mapped, when, ": the window at ", Hex(w.address), " is not mapped as such: ",
                 StableState());
    }
    FUZZ_CHECK(s.mappings.size() == with_fd, when, ": ", s.mappings.size(),
               " device mappings for ", with_fd, " windows with an fd: ", StableState());
    std::set<uint64_t> memory;
    for (const MemoryInfo& m : s.memory) memory.insert(m.id);
    FUZZ_CHECK(memory == window_memory, when,
               ": registered memory is not exactly the windows' memory: ", StableState());
  }

  // ---- one message on the server side ----

  // Checks a successful reply's payload against the request. `request` is the message's payload.
  void CheckSuccess(uint16_t command, absl::Span<const uint8_t> request,
                    const std::vector<uint8_t>& reply) {
    const char* name = vfio_user::CommandName(command);
    const BackendInfo& info = device_->description().backend;
    switch (static_cast<Command>(command)) {
      case Command::kVersion: {
        FUZZ_CHECK(reply.size() >= 5 && Read<uint16_t>(reply) == 0 &&
                       Read<uint16_t>(reply, 2) == 0 && reply.back() == 0 &&
                       std::find(reply.begin() + 4, reply.end() - 1, 0) == reply.end() - 1,
                   "VERSION reply: ", reply.size(), " bytes, not 0.0 with NUL-terminated JSON");
        break;
      }
      case Command::kDmaMap: {
        FUZZ_CHECK(reply.empty(), "DMA_MAP reply with ", reply.size(), " payload bytes");
        vfio_user::DmaMapPayload map;
        std::memcpy(&map, request.data(), sizeof(map));
        bool listed = false;
        for (const vfio_user::DmaWindow& w : windows_.List()) {
          listed |= w.address == map.address && w.size == map.size && w.offset == map.offset;
        }
        FUZZ_CHECK(listed, "DMA_MAP succeeded and no window is at ", Hex(map.address));
        break;
      }
      case Command::kDmaUnmap: {
        vfio_user::DmaUnmapPayload unmap, out;
        std::memcpy(&unmap, request.data(), sizeof(unmap));
        FUZZ_CHECK(reply.size() == sizeof(out), "DMA_UNMAP reply of ", reply.size(), " bytes");
        std::memcpy(&out, reply.data(), sizeof(out));
        FUZZ_CHECK(out.argsz == sizeof(out) && out.flags == unmap.flags &&
                       out.address == unmap.address && out.size == unmap.size,
                   "DMA_UNMAP reply does not echo the request");
        for (const vfio_user::DmaWindow& w : windows_.List()) {
          FUZZ_CHECK((unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL) == 0 && w.address != unmap.address,
                     "DMA_UNMAP succeeded and the window at ", Hex(w.address), " remains");
        }
        break;
      }
      case Command::kDeviceGetInfo: {
        FUZZ_CHECK(reply.size() == sizeof(vfio_user::DeviceInfoPayload),
                   "DEVICE_GET_INFO reply of ", reply.size(), " bytes");
        const auto out = Read<vfio_user::DeviceInfoPayload>(reply);
        FUZZ_CHECK(out.argsz == sizeof(out) && (out.flags & VFIO_DEVICE_FLAGS_PCI) != 0 &&
                       out.num_regions == info.regions.size() &&
                       out.num_irqs == info.irqs.size(),
                   "DEVICE_GET_INFO reply: argsz ", out.argsz, " flags ", out.flags, " regions ",
                   out.num_regions, " irqs ", out.num_irqs);
        break;
      }
      case Command::kDeviceGetRegionInfo: {
        FUZZ_CHECK(reply.size() == sizeof(vfio_region_info) ||
                       reply.size() == sizeof(vfio_region_info) + sizeof(vfio_region_info_cap_type),
                   "DEVICE_GET_REGION_INFO reply of ", reply.size(), " bytes");
        const auto in = Read<vfio_region_info>(std::vector<uint8_t>(request.begin(), request.end()));
        const auto out = Read<vfio_region_info>(reply);
        FUZZ_CHECK(out.index == in.index && in.index < info.regions.size() &&
                       out.size == info.regions[in.index].size && out.argsz >= sizeof(out) &&
                       (reply.size() == sizeof(out) ? out.cap_offset == 0
                                                    : out.cap_offset == sizeof(out) &&
                                                          in.argsz >= reply.size()) &&
                       (out.flags & VFIO_REGION_INFO_FLAG_MMAP) == 0,
                   "DEVICE_GET_REGION_INFO reply: index ", out.index, " size ", Hex(out.size),
                   " argsz ", out.argsz, " cap_offset ", out.cap_offset, " flags ", out.flags);
        break;
      }
      case Command::kDeviceGetRegionIoFds: {
        FUZZ_CHECK(reply.size() == sizeof(vfio_user::RegionIoFdsPayload),
                   "DEVICE_GET_REGION_IO_FDS reply of ", reply.size(), " bytes");
        const auto out = Read<vfio_user::RegionIoFdsPayload>(reply);
        FUZZ_CHECK(out.count == 0 && out.index < info.regions.size(),
                   "DEVICE_GET_REGION_IO_FDS reply: index ", out.index, " count ", out.count);
        break;
      }
      case Command::kDeviceGetIrqInfo: {
        FUZZ_CHECK(reply.size() == sizeof(vfio_irq_info), "DEVICE_GET_IRQ_INFO reply of ",
                   reply.size(), " bytes");
        const auto out = Read<vfio_irq_info>(reply);
        FUZZ_CHECK(out.index < info.irqs.size() && out.count == info.irqs[out.index].count &&
                       out.argsz == sizeof(out),
                   "DEVICE_GET_IRQ_INFO reply: index ", out.index, " count ", out.count);
        break;
      }
      case Command::kDeviceSetIrqs:
      case Command::kDeviceReset:
        FUZZ_CHECK(reply.empty(), name, " reply with ", reply.size(), " payload bytes");
        break;
      case Command::kRegionRead:
      case Command::kRegionWrite: {
        vfio_user::RegionAccessPayload in;
        std::memcpy(&in, request.data(), sizeof(in));
        const bool read = command == static_cast<uint16_t>(Command::kRegionRead);
        FUZZ_CHECK(reply.size() == sizeof(in) + (read ? in.count : 0), name, " of ", in.count,
                   " bytes: a reply of ", reply.size(), " bytes");
        FUZZ_CHECK(std::memcmp(reply.data(), &in, sizeof(in)) == 0, name,
                   " reply does not echo offset, region and count");
        FUZZ_CHECK(in.region < info.regions.size() &&
                       in.offset + in.count <= info.regions[in.region].size,
                   name, " succeeded outside region ", in.region);
        break;
      }
      default:
        FUZZ_CHECK(false, name, " (", command, ") succeeded; this server does not offer it");
    }
  }

  static bool ReadOnly(uint16_t command) {
    switch (static_cast<Command>(command)) {
      case Command::kDeviceGetInfo:
      case Command::kDeviceGetRegionInfo:
      case Command::kDeviceGetRegionIoFds:
      case Command::kDeviceGetIrqInfo:
      case Command::kRegionRead:  // edu's registers and config space have no read side effects
        return true;
      default:
        return false;
    }
  }

  // Reads the reply the server just sent: it must be all that is waiting.
  std::vector<uint8_t> TakeReply(Connection& c, const Header& request, uint32_t error) {
    std::vector<uint8_t> buffer(max_message_bytes_ + 64);
    size_t have = 0;
    while (true) {
      const ssize_t n =
          ::recv(c.client.get(), buffer.data() + have, buffer.size() - have, MSG_DONTWAIT);
      if (n <= 0) break;
      have += static_cast<size_t>(n);
    }
    const char* name = vfio_user::CommandName(request.command);
    FUZZ_CHECK(have >= sizeof(Header), name, ": a reply of ", have, " bytes");
    const Header header = Read<Header>(buffer);
    FUZZ_CHECK(header.message_size == have, name, ": reply size ", header.message_size, " but ",
               have, " bytes arrived");
    FUZZ_CHECK(header.message_id == request.message_id && header.command == request.command,
               name, ": reply id ", header.message_id, " command ", header.command, " for id ",
               request.message_id, " command ", request.command);
    const uint32_t flags = vfio_user::kTypeReply | (error != 0 ? vfio_user::kFlagError : 0);
    FUZZ_CHECK(header.flags == flags && header.error == error, name, ": reply flags ",
               Hex(header.flags), " error ", header.error, ", expected ", Hex(flags), " and ",
               error);
    FUZZ_CHECK(error == 0 || have == sizeof(Header), name, ": an error reply with ",
               have - sizeof(Header), " payload bytes");
    return std::vector<uint8_t>(buffer.begin() + sizeof(Header), buffer.begin() + have);
  }

  void ExpectNothingWaiting(Connection& c, const char* why) {
    struct pollfd wait = {c.client.get(), POLLIN, 0};
    const int n = ::poll(&wait, 1, 0);
    FUZZ_CHECK(n == 0 || (wait.revents & POLLIN) == 0, "bytes arrived for ", why);
  }

  // One message through the server's loop (VfioUserServer::Serve). False: the connection ends.
  bool Serve(int i, vfio_user::Message& request) {
    Connection& c = connections_[i];
    const Header header = request.header;
    const char* name = vfio_user::CommandName(header.command);
    trace_.push_back(absl::StrCat("    server: id ", header.message_id, " ", name, " (",
                                  header.command, "), ", request.payload.size(),
                                  " payload bytes, ", request.fds.size(), " fds"));
    if ((header.flags & vfio_user::kFlagTypeMask) != vfio_user::kTypeCommand) {
      trace_.back() += " -> ignored (not a command)";
      ExpectNothingWaiting(c, "a message that is not a command");
      return true;
    }
    const bool negotiated_before = c.session->negotiated().has_value();
    const std::string before = StableState();
    const std::vector<uint8_t> request_payload(request.payload.begin(), request.payload.end());
    vfio_user::VfioUserSession::Reply reply = c.session->Handle(request);
    request.fds.clear();  // what the session did not take is closed with the message
    const std::vector<uint8_t> reply_payload(reply.payload.begin(), reply.payload.end());
    trace_.back() += reply.error != 0 ? absl::StrCat(" -> errno ", reply.error)
                                      : absl::StrCat(" -> ok, ", reply_payload.size(), " bytes");
    if (reply.close) trace_.back() += ", closes";

    FUZZ_CHECK(reply.error <= kMaxErrno, name, ": errno ", reply.error, " is not an errno");
    if ((header.flags & vfio_user::kFlagNoReply) == 0) {
      // As Serve sends it.
      Header out{header.message_id, header.command, 0,
                 vfio_user::kTypeReply | (reply.error != 0 ? vfio_user::kFlagError : 0),
                 reply.error};
      absl::Status sent = c.stream->Send(
          out, reply.error != 0 ? absl::Span<const uint8_t>() : absl::MakeConstSpan(reply_payload));
      FUZZ_CHECK(sent.ok(), name, ": the reply could not be sent: ", sent.ToString());
      TakeReply(c, header, reply.error);
    } else {
      ExpectNothingWaiting(c, "a command sent with No_reply");
    }

    const bool negotiated = c.session->negotiated().has_value();
    FUZZ_CHECK(!reply.close || reply.error != 0, name, ": a successful command closes");
    FUZZ_CHECK(reply.close == (reply.error != 0 && !negotiated_before), name,
               ": close is ", reply.close, " after errno ", reply.error,
               " with the version negotiated before: ", negotiated_before);
    FUZZ_CHECK(negotiated == (sessions_.RoleOf(c.id) == SessionRole::kOwner), name,
               ": negotiated ", negotiated, " but the connection's role differs");
    if (reply.error == 0) {
      CheckSuccess(header.command, request_payload, reply_payload);
    }
    if (reply.error != 0 || ReadOnly(header.command)) {
      const std::string after = StableState();
      FUZZ_CHECK(before == after, name,
                 reply.error != 0 ? absl::StrCat(" failed (errno ", reply.error, ")")
                                  : std::string(" (read-only) succeeded"),
                 " and changed the state\n    before: ", before, "\n    after:  ", after);
    }
    CheckConsistent(name);
    return !reply.close;
  }

  // Reads up to `messages` messages from the connection's stream (all to the stream's end when
  // `to_end`), serving each; the connection ends on broken framing, end of stream or when the
  // session closes it.
  void Drain(int i, size_t messages, bool to_end) {
    for (size_t n = 0; to_end || n < messages; ++n) {
      Connection& c = connections_[i];
      absl::StatusOr<std::optional<vfio_user::Message>> next = c.stream->Next();
      if (!next.ok()) {
        FUZZ_CHECK(next.status().code() == absl::StatusCode::kDataLoss,
                   "MessageStream::Next: ", next.status().ToString());
        End(i, std::string(next.status().message()));
        return;
      }
      if (!next->has_value()) {
        FUZZ_CHECK(to_end, "the stream ended while the client's end is open");
        End(i, "the client closed the stream");
        return;
      }
      if (!Serve(i, **next)) {
        End(i, "the session closed it");
        return;
      }
    }
  }

  // ---- steps ----

  void Step(const fuzz::VfioUserStep& step) {
    const int i = static_cast<int>(step.connection() % kConnections);
    trace_.push_back(absl::StrCat("connection ", i, ": ",
                                  fuzz::VfioUserStep::descriptor()
                                      ->FindFieldByNumber(step.op_case())
                                      ? fuzz::VfioUserStep::descriptor()
                                            ->FindFieldByNumber(step.op_case())
                                            ->name()
                                      : std::string("(none)")));
    switch (step.op_case()) {
      case fuzz::VfioUserStep::kMessage: {
        Connection& c = Open(i);
        std::vector<UniqueFd> fds;
        const std::vector<uint8_t> bytes = Build(c, step.message(), fds);
        Send(c, bytes, fds);
        fds.clear();
        Drain(i, 1, false);
        return;
      }
      case fuzz::VfioUserStep::kBatch: {
        Connection& c = Open(i);
        std::vector<uint8_t> bytes;
        std::vector<UniqueFd> fds;
        size_t count = 0;
        for (const fuzz::VfioUserMessage& m : step.batch().messages()) {
          if (count == kMaxBatch) break;
          std::vector<uint8_t> one = Build(c, m, fds);
          if (bytes.size() + one.size() > kMaxSendBytes) break;
          bytes.insert(bytes.end(), one.begin(), one.end());
          ++count;
        }
        if (count == 0) return;
        Send(c, bytes, fds);
        fds.clear();
        Drain(i, count, false);
        return;
      }
      case fuzz::VfioUserStep::kRaw: {
        Connection& c = Open(i);
        std::vector<uint8_t> bytes(step.raw().data().begin(), step.raw().data().end());
        if (bytes.size() > kMaxSendBytes) bytes.resize(kMaxSendBytes);
        std::vector<UniqueFd> fds;
        for (const fuzz::VfioUserFd& spec : step.raw().fds()) {
          if (fds.size() < kMaxFdsPerSend) fds.push_back(MakeFd(spec));
        }
        trace_.back() += absl::StrCat(": ", bytes.size(), " bytes", FdNames(step.raw().fds()),
                                      ", then the end of the stream");
        Send(c, bytes, fds);
        fds.clear();
        ::shutdown(c.client.get(), SHUT_WR);
        Drain(i, 0, true);
        return;
      }
      case fuzz::VfioUserStep::kClose:
        End(i, "the client closed it");
        return;
      case fuzz::VfioUserStep::OP_NOT_SET:
        return;
    }
  }

  OwnerCleanup cleanup_;
  std::unique_ptr<PciDevice> device_;
  SessionManager sessions_;
  vfio_user::DmaWindows windows_;
  const vfio_user::ServerLimits limits_;
  size_t max_message_bytes_ = 0;
  std::array<Connection, kConnections> connections_;
  ConnectionId next_connection_id_ = 1;
  std::vector<UniqueFd> memfds_;  // the harness's copies of every memfd sent (MEMFD_AGAIN)
  std::vector<std::string> trace_;
};

}  // namespace
}  // namespace vfiod

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vfiod::fuzz::RunProtoInput<vfiod::fuzz::VfioUserFuzzInput, vfiod::Harness>("vfio_user_fuzz", data, size);
}
