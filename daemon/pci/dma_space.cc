#include "daemon/pci/dma_space.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/format.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/logging.h"

namespace vfiod {
namespace {

// "[0x1000, 0x1fff]": an inclusive IOVA range.
std::string Range(uint64_t first, uint64_t last) {
  return absl::StrCat("[", Hex(first), ", ", Hex(last), "]");
}

uint64_t LastIova(const DmaMapRequest& m) { return m.iova + (m.size - 1); }

uint32_t MappingLimit(const DeviceLimits& limits, const IommuInfo& iommu) {
  // 0 means the kernel did not report VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL; its own limit applies.
  if (iommu.dma_mappings_available == 0) return limits.max_dma_mappings;
  return std::min(limits.max_dma_mappings, iommu.dma_mappings_available);
}

}  // namespace

absl::StatusOr<MappedMemory> MappedMemory::Map(int fd, size_t size) {
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) return ErrnoError(errno, "mmap");
  return MappedMemory(static_cast<uint8_t*>(data), size);
}

MappedMemory::MappedMemory(MappedMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedMemory& MappedMemory::operator=(MappedMemory&& other) noexcept {
  if (this != &other) {
    Unmap();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedMemory::~MappedMemory() { Unmap(); }

void MappedMemory::Unmap() {
  if (data_ == nullptr) return;
  if (::munmap(data_, size_) != 0) {
    LogError("munmap failed", {{"error", ErrnoError(errno, "munmap").ToString()}});
  }
  data_ = nullptr;
  size_ = 0;
}

DmaSpace::DmaSpace(DeviceBackend* backend, const DeviceLimits& limits)
    : backend_(backend),
      max_memory_bytes_(limits.max_memory_bytes),
      max_memory_regions_(limits.max_memory_regions),
      max_dma_mappings_(MappingLimit(limits, backend->Info().iommu)),
      iommu_page_size_(backend->Info().iommu.page_size_bitmap &
                       (~backend->Info().iommu.page_size_bitmap + 1)),
      host_page_size_(static_cast<uint64_t>(::sysconf(_SC_PAGESIZE))) {}

DmaSpace::~DmaSpace() { ReleaseAll(); }

absl::StatusOr<MemoryInfo> DmaSpace::RegisterMemory(UniqueFd fd, uint64_t size) {
  if (!fd.valid()) return absl::InvalidArgumentError("RegisterMemory: no fd");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return Annotate(ErrnoError(errno, "fstat"), "RegisterMemory");
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RegisterMemory: the fd is not a memfd or regular file (file type 0",
                     absl::Hex(st.st_mode & S_IFMT), ")"));
  }
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return absl::FailedPreconditionError(
        "RegisterMemory: the fd is not sealed with F_SEAL_SHRINK; create it with "
        "memfd_create(MFD_ALLOW_SEALING) and fcntl(F_ADD_SEALS, F_SEAL_SHRINK) so that it "
        "cannot be truncated under the device");
  }
  // Either seal makes the shared writable mapping fail (EPERM), as does an fd not open for
  // reading and writing (EACCES): refused here, before mmap, as a property of the fd.
  for (const auto& [seal, name] : {std::pair<int, const char*>{F_SEAL_WRITE, "F_SEAL_WRITE"},
                                   {F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE"}}) {
    if ((seals & seal) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "RegisterMemory: the fd is sealed with ", name, "; DMA memory must be writable"));
    }
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return Annotate(ErrnoError(errno, "fcntl(F_GETFL)"), "RegisterMemory");
  if ((flags & O_ACCMODE) != O_RDWR) {
    return absl::FailedPreconditionError(
        absl::StrCat("RegisterMemory: the fd is open ",
                     (flags & O_ACCMODE) == O_RDONLY ? "read-only" : "write-only",
                     "; DMA memory is mapped shared for reading and writing, which needs O_RDWR"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (size == 0) size = file_size;
  if (size == 0) {
    return absl::InvalidArgumentError("RegisterMemory: size 0 (and the file is empty)");
  }
  if (size % host_page_size_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RegisterMemory: size ", Hex(size),
                                                   " is not a multiple of the ", host_page_size_,
                                                   "-byte page"));
  }
  if (size > file_size) {
    return absl::OutOfRangeError(absl::StrCat("RegisterMemory: size ", Hex(size),
                                              " is beyond the file's size ", Hex(file_size)));
  }

  absl::MutexLock change(&change_mu_);
  absl::MutexLock lock(&mu_);  // mmap of a memfd without populating: short
  if (memory_.size() >= max_memory_regions_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("RegisterMemory: ", memory_.size(),
                     " memory regions are registered, the limit is ", max_memory_regions_));
  }
  if (size > max_memory_bytes_ - memory_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("RegisterMemory: size ", Hex(size), " on top of the ", Hex(memory_bytes_),
                     " bytes registered exceeds the limit of ", Hex(max_memory_bytes_), " bytes"));
  }
  absl::StatusOr<MappedMemory> mapping = MappedMemory::Map(fd.get(), size);
  if (!mapping.ok()) return Annotate(mapping.status(), "RegisterMemory");

  const uint64_t id = next_memory_id_++;
  memory_.emplace(id, RegisteredMemory{*std::move(mapping), 0});
  memory_bytes_ += size;
  return MemoryInfo{id, size, 0};
}

absl::Status DmaSpace::UnregisterMemory(uint64_t memory_id) {
  absl::MutexLock change(&change_mu_);
  std::map<uint64_t, RegisteredMemory>::node_type unregistered;  // munmapped without mu_
  absl::MutexLock lock(&mu_);
  auto it = memory_.find(memory_id);
  if (it == memory_.end()) {
    return absl::NotFoundError(
        absl::StrCat("UnregisterMemory: memory id ", memory_id, " is not registered"));
  }
  if (it->second.dma_mappings > 0) {
    return absl::FailedPreconditionError(absl::StrCat("UnregisterMemory: memory id ", memory_id,
                                                      " is used by ", it->second.dma_mappings,
                                                      " DMA mapping(s); unmap them first"));
  }
  memory_bytes_ -= it->second.mapping.size();
  unregistered = memory_.extract(it);
  return absl::OkStatus();
}

absl::Status DmaSpace::CheckIommuAligned(
    absl::string_view op,
    std::initializer_list<std::pair<const char*, uint64_t>> values) const {
  if (iommu_page_size_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": the IOMMU reports no supported page size"));
  }
  for (const auto& [what, value] : values) {
    if (value % iommu_page_size_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " ", Hex(value),
                                                     " is not aligned to the ", iommu_page_size_,
                                                     "-byte IOMMU page"));
    }
  }
  return absl::OkStatus();
}

absl::Status DmaSpace::ValidateMap(const DmaMapRequest& r) const {
  if (r.size == 0) return absl::InvalidArgumentError("MapDma: size 0");
  if (!r.device_read && !r.device_write) {
    return absl::InvalidArgumentError(
        "MapDma: neither device_read nor device_write is set; a mapping needs at least one");
  }
  if (absl::Status status = CheckIommuAligned(
          "MapDma", {{"iova", r.iova}, {"size", r.size}, {"offset", r.offset}});
      !status.ok()) {
    return status;
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (r.size - 1 > kMax - r.iova) {
    return absl::OutOfRangeError(
        absl::StrCat("MapDma: iova ", Hex(r.iova), " + size ", Hex(r.size), " overflows 64 bits"));
  }
  if (r.size > kMax - r.offset) {
    return absl::OutOfRangeError(absl::StrCat("MapDma: offset ", Hex(r.offset), " + size ",
                                              Hex(r.size), " overflows 64 bits"));
  }
  auto memory = memory_.find(r.memory_id);
  if (memory == memory_.end()) {
    return absl::NotFoundError(
        absl::StrCat("MapDma: memory id ", r.memory_id, " is not registered"));
  }
  const uint64_t memory_size = memory->second.mapping.size();
  if (r.offset + r.size > memory_size) {
    return absl::OutOfRangeError(absl::StrCat("MapDma: offset ", Hex(r.offset), " + size ",
                                              Hex(r.size), " is beyond memory id ", r.memory_id,
                                              " of ", Hex(memory_size), " bytes"));
  }
  const uint64_t last = LastIova(r);
  const std::vector<IovaRange>& usable = backend_->Info().iommu.usable_ranges;
  // An IOMMU that reports no ranges leaves the check to the kernel.
  if (!usable.empty() && std::none_of(usable.begin(), usable.end(), [&](const IovaRange& u) {
        return u.start <= r.iova && last <= u.last;
      })) {
    return absl::OutOfRangeError(absl::StrCat("MapDma: IOVA range ", Range(r.iova, last),
                                              " is not inside one usable IOVA range of the "
                                              "IOMMU"));
  }
  auto next = mappings_.upper_bound(last);
  if (next != mappings_.begin()) {
    const DmaMapRequest& m = std::prev(next)->second;
    const uint64_t m_last = LastIova(m);
    if (m_last >= r.iova) {
      const char* kind = "partially overlaps";
      if (m.iova == r.iova && m_last == last) {
        kind = "duplicates";
      } else if (r.iova <= m.iova && m_last <= last) {
        kind = "contains";
      } else if (m.iova <= r.iova && last <= m_last) {
        kind = "is inside";
      }
      return absl::AlreadyExistsError(absl::StrCat("MapDma: IOVA range ", Range(r.iova, last), " ",
                                                   kind, " the existing mapping ",
                                                   Range(m.iova, m_last)));
    }
  }
  if (mappings_.size() >= max_dma_mappings_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "MapDma: ", mappings_.size(), " DMA mappings exist, the limit is ", max_dma_mappings_));
  }
  return absl::OkStatus();
}

absl::Status DmaSpace::MapDma(const DmaMapRequest& request) {
  absl::MutexLock change(&change_mu_);
  DmaMap map;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (absl::Status status = ValidateMap(request); !status.ok()) return status;
    map.host_address = memory_.at(request.memory_id).mapping.data() + request.offset;
  }
  map.iova = request.iova;
  map.size = request.size;
  map.device_read = request.device_read;
  map.device_write = request.device_write;
  // Without mu_ (type1 pins every page); change_mu_ keeps the memory registered and the IOVA
  // range free.
  if (absl::Status status = backend_->MapDma(map); !status.ok()) {
    return Annotate(status,
                    absl::StrCat("MapDma: IOVA range ", Range(request.iova, LastIova(request))));
  }
  absl::MutexLock lock(&mu_);
  mappings_.emplace(request.iova, request);
  ++memory_.at(request.memory_id).dma_mappings;
  return absl::OkStatus();
}

absl::Status DmaSpace::UnmapOne(const DmaMapRequest& m) {
  if (absl::Status status = backend_->UnmapDma(m.iova, m.size); !status.ok()) {
    return Annotate(status, absl::StrCat("UnmapDma: mapping ", Range(m.iova, LastIova(m))));
  }
  absl::MutexLock lock(&mu_);
  auto memory = memory_.find(m.memory_id);
  if (memory != memory_.end()) --memory->second.dma_mappings;
  mappings_.erase(m.iova);
  return absl::OkStatus();
}

absl::StatusOr<UnmapResult> DmaSpace::UnmapDma(uint64_t iova, uint64_t size) {
  if (size == 0) return absl::InvalidArgumentError("UnmapDma: size 0");
  if (absl::Status status = CheckIommuAligned("UnmapDma", {{"iova", iova}, {"size", size}});
      !status.ok()) {
    return status;
  }
  if (size - 1 > std::numeric_limits<uint64_t>::max() - iova) {
    return absl::OutOfRangeError(
        absl::StrCat("UnmapDma: iova ", Hex(iova), " + size ", Hex(size), " overflows 64 bits"));
  }
  const uint64_t last = iova + (size - 1);

  absl::MutexLock change(&change_mu_);
  std::vector<DmaMapRequest> unmapping;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto first = mappings_.upper_bound(iova);
    if (first != mappings_.begin() && LastIova(std::prev(first)->second) >= iova) --first;
    auto end = mappings_.upper_bound(last);
    if (first == end) {
      return absl::NotFoundError(
          absl::StrCat("UnmapDma: nothing is mapped in ", Range(iova, last)));
    }
    for (auto it = first; it != end; ++it) {
      const DmaMapRequest& m = it->second;
      if (m.iova < iova || LastIova(m) > last) {
        return absl::InvalidArgumentError(
            absl::StrCat("UnmapDma: ", Range(iova, last), " would split the mapping ",
                         Range(m.iova, LastIova(m)), "; unmap whole mappings"));
      }
      unmapping.push_back(m);
    }
  }
  UnmapResult result;
  for (const DmaMapRequest& m : unmapping) {
    if (absl::Status status = UnmapOne(m); !status.ok()) return status;
    result.bytes += m.size;
    ++result.mappings;
  }
  return result;
}

void DmaSpace::ReleaseAll() {
  absl::MutexLock change(&change_mu_);
  std::vector<DmaMapRequest> mappings;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [iova, mapping] : mappings_) mappings.push_back(mapping);
  }
  for (const DmaMapRequest& mapping : mappings) {
    if (absl::Status status = UnmapOne(mapping); !status.ok()) {
      LogError("releasing a DMA mapping failed; its memory stays mapped",
               {{"error", status.ToString()}});
    }
  }
  std::vector<std::map<uint64_t, RegisteredMemory>::node_type> released;  // munmapped unlocked
  absl::MutexLock lock(&mu_);
  for (auto it = memory_.begin(); it != memory_.end();) {
    auto next = std::next(it);
    if (it->second.dma_mappings == 0) {
      memory_bytes_ -= it->second.mapping.size();
      released.push_back(memory_.extract(it));
    }
    it = next;
  }
}

std::vector<MemoryInfo> DmaSpace::Memory() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<MemoryInfo> out;
  out.reserve(memory_.size());
  for (const auto& [id, memory] : memory_) {
    out.push_back(MemoryInfo{id, memory.mapping.size(), memory.dma_mappings});
  }
  return out;
}

std::vector<DmaMapRequest> DmaSpace::Mappings() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<DmaMapRequest> out;
  out.reserve(mappings_.size());
  for (const auto& [iova, mapping] : mappings_) out.push_back(mapping);
  return out;
}

}  // namespace vfiod
