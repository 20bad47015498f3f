// vfioctl's ownership commands. Ownership belongs to a connection, so it lasts as long as this
// vfioctl (or its session); Context::Finish() releases it.
#include "client/cli/commands_ownership.h"

#include <vector>

#include "absl/status/status.h"
#include "client/cli/command.h"
#include "client/cli/context.h"

namespace vfiod::cli {
namespace {

absl::Status Claim(Context& ctx) {
  absl::Status status = ctx.client().ClaimOwnership();
  if (!status.ok()) return status;
  ctx.set_owner(true);
  ctx.out().Done(ctx.in_session() ? "ownership claimed (it ends with the session)"
                                  : "ownership claimed (it ends when vfioctl exits)");
  return absl::OkStatus();
}

absl::Status Release(Context& ctx) {
  absl::Status status = ctx.client().ReleaseOwnership();
  if (!status.ok()) return status;
  ctx.set_owner(false);
  // The daemon unregistered every memory of the owner.
  ctx.ForgetAllMemory();
  ctx.out().Done("ownership released");
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> OwnershipCommands() {
  return {
      {"claim", "", "become the owner (fails while another session owns the device)",
       Role::kObserver, /*fd_channel=*/false, Define(Claim)},
      {"release", "", "stop being the owner: the daemon undoes what this session set up",
       Role::kObserver, /*fd_channel=*/false, Define(Release)},
  };
}

}  // namespace vfiod::cli
