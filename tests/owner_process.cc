// A stand-in VMM for owner-loss tests: connects to vfiod as owner, registers memory, maps DMA,
// enables MSI and INTx-free interrupts on daemon-owned and own eventfds, then waits to be
// killed. Usage: owner_process SOCKET_PATH
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>

#include "client/vfio_client.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: owner_process SOCKET_PATH\n");
    return 2;
  }
  auto fail = [](const absl::Status& status) {
    std::fprintf(stderr, "owner_process: %s\n", status.ToString().c_str());
    return 1;
  };
  absl::StatusOr<std::unique_ptr<vfiod::VfioClient>> client = vfiod::VfioClient::Connect(argv[1]);
  if (!client.ok()) return fail(client.status());
  vfiod::VfioClient& owner = **client;
  if (absl::Status s = owner.ClaimOwnership(); !s.ok()) return fail(s);
  constexpr uint64_t kSize = 2 << 20;
  absl::StatusOr<vfiod::client::UniqueFd> memfd = vfiod::VfioClient::CreateSealedMemfd("g", kSize);
  if (!memfd.ok()) return fail(memfd.status());
  absl::StatusOr<vfiod::v1::RegisterMemoryResponse> memory =
      owner.RegisterMemory(memfd->get(), kSize);
  if (!memory.ok()) return fail(memory.status());
  for (uint64_t i = 0; i < 4; ++i) {
    absl::Status s = owner.MapDma(0x100000 + i * 0x10000, 0x10000, memory->memory_id(),
                                  i * 0x10000);
    if (!s.ok()) return fail(s);
  }
  if (absl::Status s = owner.WriteConfig(0x04, 2, 0x0006); !s.ok()) return fail(s);
  int efd = ::eventfd(0, EFD_CLOEXEC);
  if (absl::Status s = owner.SetIrqEventfds(vfiod::v1::IRQ_INDEX_MSI, 0, {efd}); !s.ok()) {
    return fail(s);
  }
  std::printf("READY\n");
  std::fflush(stdout);
  while (true) ::pause();
}
