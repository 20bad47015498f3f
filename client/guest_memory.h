// GuestMemory: the CLI's own mapping of a memfd it registered with vfiod as guest memory, so
// that vfioctl can fill, dump and compare what a device reads and writes by DMA. Also the fill
// patterns of `vfioctl memory fill`.
//
// The mapping is MAP_SHARED, so the daemon (and the device's DMA) and the CLI see the same
// pages. Not thread-safe; move-only; unmaps and closes on destruction.
#ifndef VFIOD_CLIENT_GUEST_MEMORY_H_
#define VFIOD_CLIENT_GUEST_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/unique_fd.h"

namespace vfiod::client {

// What `memory fill` writes. Byte i is counted from the start of the filled range.
struct FillPattern {
  enum class Kind {
    kByte,    // every byte is `value`
    kSeq,     // byte i is (i * 7 + 3) mod 256
    kRandom,  // a reproducible pseudo-random stream (splitmix64) seeded with `value`
  };
  Kind kind = Kind::kByte;
  uint64_t value = 0;
};

// "0x5a" or "90" (one byte), "seq", "random:SEED" (SEED a number, 0x allowed).
absl::StatusOr<FillPattern> ParseFillPattern(absl::string_view text);
// The pattern as ParseFillPattern reads it ("0x5a", "seq", "random:42").
std::string FillPatternName(const FillPattern& pattern);
// Writes the pattern into `out`, byte 0 of `out` being byte 0 of the pattern.
void GeneratePattern(const FillPattern& pattern, absl::Span<uint8_t> out);

// INVALID_ARGUMENT/OUT_OF_RANGE unless [offset, offset + length) lies in [0, size), overflow
// checked. `what` names the operation in the message.
absl::Status CheckRange(uint64_t offset, uint64_t length, uint64_t size, absl::string_view what);

class GuestMemory {
 public:
  // Maps `size` bytes of `fd` (read/write, shared) and keeps the fd.
  static absl::StatusOr<GuestMemory> Map(UniqueFd fd, uint64_t size);

  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }

  // Each checks the range first (OUT_OF_RANGE).
  absl::Status Fill(uint64_t offset, uint64_t length, const FillPattern& pattern);
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) const;
  // The offset (relative to the compared ranges) of the first byte that differs between
  // [offset_a, +length) and [offset_b, +length); nullopt when they are equal.
  absl::StatusOr<std::optional<uint64_t>> Compare(uint64_t offset_a, uint64_t offset_b,
                                                  uint64_t length) const;

 private:
  GuestMemory(UniqueFd fd, uint8_t* data, uint64_t size)
      : fd_(std::move(fd)), data_(data), size_(size) {}
  void Unmap();

  UniqueFd fd_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_GUEST_MEMORY_H_
