#!/usr/bin/env bash
# Owner-loss cleanup figure on the real type1 IOMMU (a benchmark, not a test): in the VM lab's
# guest, tests/bench/owner_loss_figure serves the real edu device (vfio-pci, emulated VT-d),
# an owner registers and DMA-maps SIZE bytes (type1 pins every page), an observer calls
# GetState back to back, the owner disconnects; prints vfiod's own cleanup time (cleanup_us of
# its "owner detached" line) and the observer's calls answered during the cleanup.
#   tools/figures/owner_loss_lab.sh [SIZE]      (default 1073741824: 1 GiB)
# The guest gets 3 GiB of memory for this figure (the lab's default is 1 GiB) and vfiod
# --max-dma-bytes of SIZE + 1 GiB (RLIMIT_MEMLOCK, which type1 charges the pinned pages to).
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-1073741824}
BAZEL=${BAZEL:-bazel}
"$BAZEL" build //daemon:vfiod //tests/bench:owner_loss_figure
bin=$("$BAZEL" info bazel-bin 2>/dev/null)
exec tools/lab/lab.sh run --timeout "${LAB_TIMEOUT:-600}" --mem "${LAB_MEM:-3072}" \
  --add "$bin/daemon/vfiod:/figure/vfiod" \
  --add "$bin/tests/bench/owner_loss_figure:/figure/owner_loss_figure" \
  -- sh -c "/figure/owner_loss_figure --vfiod=/figure/vfiod --device=\$LAB_EDU --size=$size \
    --vfiod_args=--max-dma-bytes=$((size + (1 << 30))),--log-level=debug"
