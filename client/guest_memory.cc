#include "client/guest_memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/cli_parse.h"

namespace vfiod::client {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<FillPattern> ParseFillPattern(absl::string_view text) {
  if (text == "seq") return FillPattern{FillPattern::Kind::kSeq, 0};
  if (absl::ConsumePrefix(&text, "random:")) {
    absl::StatusOr<uint64_t> seed = ParseNumber(text, "random SEED");
    if (!seed.ok()) return seed.status();
    return FillPattern{FillPattern::Kind::kRandom, *seed};
  }
  absl::StatusOr<uint64_t> value = ParseNumber(text, "PATTERN");
  if (!value.ok() || *value > 0xff) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad PATTERN \"", text, "\" (a byte such as 0x5a, seq, or random:SEED)"));
  }
  return FillPattern{FillPattern::Kind::kByte, *value};
}

std::string FillPatternName(const FillPattern& pattern) {
  switch (pattern.kind) {
    case FillPattern::Kind::kByte:
      return absl::StrFormat("0x%02x", pattern.value);
    case FillPattern::Kind::kSeq:
      return "seq";
    case FillPattern::Kind::kRandom:
      return absl::StrCat("random:", pattern.value);
  }
  return "?";
}

void GeneratePattern(const FillPattern& pattern, absl::Span<uint8_t> out) {
  switch (pattern.kind) {
    case FillPattern::Kind::kByte:
      std::memset(out.data(), static_cast<int>(pattern.value), out.size());
      return;
    case FillPattern::Kind::kSeq:
      for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 7 + 3);
      return;
    case FillPattern::Kind::kRandom: {
      uint64_t state = pattern.value;
      uint64_t word = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        if (i % 8 == 0) word = SplitMix64(&state);
        out[i] = static_cast<uint8_t>(word >> (8 * (i % 8)));
      }
      return;
    }
  }
}

absl::Status CheckRange(uint64_t offset, uint64_t length, uint64_t size, absl::string_view what) {
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s: range 0x%x+0x%x is outside the memory's 0x%x bytes", what, offset, length, size));
  }
  return absl::OkStatus();
}

absl::StatusOr<GuestMemory> GuestMemory::Map(UniqueFd fd, uint64_t size) {
  if (size == 0 || size > SIZE_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("GuestMemory: bad size ", size));
  }
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    return absl::InternalError(
        absl::StrCat("GuestMemory: mmap ", size, " bytes: ", std::strerror(error)));
  }
  return GuestMemory(std::move(fd), static_cast<uint8_t*>(data), size);
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : fd_(std::move(other.fd_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    Unmap();
    fd_ = std::move(other.fd_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

GuestMemory::~GuestMemory() { Unmap(); }

void GuestMemory::Unmap() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

absl::Status GuestMemory::Fill(uint64_t offset, uint64_t length, const FillPattern& pattern) {
  if (absl::Status status = CheckRange(offset, length, size_, "memory fill"); !status.ok()) {
    return status;
  }
  GeneratePattern(pattern, absl::MakeSpan(data_ + offset, length));
  return absl::OkStatus();
}

absl::StatusOr<std::string> GuestMemory::Read(uint64_t offset, uint64_t length) const {
  if (absl::Status status = CheckRange(offset, length, size_, "memory read"); !status.ok()) {
    return status;
  }
  return std::string(reinterpret_cast<const char*>(data_ + offset), length);
}

absl::StatusOr<std::optional<uint64_t>> GuestMemory::Compare(uint64_t offset_a, uint64_t offset_b,
                                                             uint64_t length) const {
  if (absl::Status status = CheckRange(offset_a, length, size_, "memory compare"); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckRange(offset_b, length, size_, "memory compare"); !status.ok()) {
    return status;
  }
  for (uint64_t i = 0; i < length; ++i) {
    if (data_[offset_a + i] != data_[offset_b + i]) return std::optional<uint64_t>(i);
  }
  return std::optional<uint64_t>();
}

}  // namespace vfiod::client
