#!/usr/bin/env bash
# Every vfioctl command with --json, against a real vfiod serving the simulated edu device:
# each line of output must parse as JSON (python3's json module), every command of
# `vfioctl --help` must have run, and the 64-bit convention holds (64-bit integers are decimal
# strings, narrower ones numbers).
#
# Usage: vfioctl_json_test.sh VFIOCTL VFIOD
set -uo pipefail

vfioctl=$1
vfiod=$2
# Short socket paths: TEST_TMPDIR is longer than sun_path allows.
dir=$(mktemp -d /tmp/vfioctl-json.XXXXXX)
out=$dir/out
mkdir "$out"
"$vfiod" --device=sim:edu --listen="$dir/s" --vfio-user="$dir/v" 2>"$dir/vfiod.log" &
vfiod_pid=$!
trap 'kill "$vfiod_pid" 2>/dev/null; wait "$vfiod_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 200); do [[ -S $dir/s.fds && -S $dir/v ]] && break; sleep 0.05; done

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# run NAME [vfioctl args...]: output in $out/NAME.json; must exit 0.
run() {
  local name=$1
  shift
  "$vfioctl" --socket "$dir/s" --json "$@" >"$out/$name.json" 2>"$out/$name.err"
  local status=$?
  ((status == 0)) || fail "$name: vfioctl $* exited $status: $(cat "$out/$name.err")"
}

run info info
run config config
run config-raw config --raw
run config-read config read 0x04 2
run state state
run top top --count 2 --interval 50ms
# list: this directory holds the gRPC socket (a vfiod), its fd channel (skipped) and the
# vfio-user socket (not a vfiod gRPC socket).
run list list "$dir"

# irq watch from an observer, while the session below makes the device raise MSI vector 0.
"$vfioctl" --socket "$dir/s" --json irq watch --count 1 --timeout 20s msi \
  >"$out/irq-watch.json" 2>"$out/irq-watch.err" &
watch_pid=$!

# Every other command, in one owner session: each line is echoed as {"command": ...}.
command=$("$vfioctl" --socket "$dir/s" config read 0x04 2)
run session --claim session <<SCRIPT
config write 0x04 2 $(printf '0x%04x' $((command | 0x4)))
region read 0 0 8
region read32 0 0
region write 0 0x04 78563412
region write32 0 0x04 0x12345678
region poll32 0 0x04 0xffffffff 0xedcba987 1s
memory create 64K guest
memory fill guest 0 1024 seq
memory dump guest 0 16
memory compare guest 0 0 16
expect-error DATA_LOSS memory compare guest 0 0x1000 16
dma map 0x100000 64K guest 0 rw
irq watch-start msi
irq enable-watch msi 0 1
# the background irq watch subscribed before this session started; give it time to be live
sleep 500ms
region write32 0 0x60 1
irq wait msi 5s
region write32 0 0x64 1
irq mask msi 0 1
irq unmask msi 0 1
irq watch-stop
irq disable msi
dma unmap 0x100000 64K
memory unregister guest
# the simulated edu device has no reset
expect-error FAILED_PRECONDITION reset
release
claim
SCRIPT
wait "$watch_pid" || fail "irq watch exited $?: $(cat "$out/irq-watch.err")"

"$vfioctl" --help >"$dir/help.txt" || fail "vfioctl --help exited $?"

python3 - "$out" "$dir/help.txt" "$dir" <<'PY' || failures=$((failures + 1))
import json, os, sys

out, help_path, sockdir = sys.argv[1:4]
problems = []

# The commands of `vfioctl --help`: the left column of its command list, up to the synopsis.
commands = set()
in_list = False
for line in open(help_path):
    if line.startswith("Commands ("):
        in_list = True
        continue
    if in_list and not line.strip():
        break
    if in_list and line.startswith("  ") and not line.startswith("   "):
        words = []
        for word in line[2:].split("  ")[0].split():
            if not (word[0].islower() and word.replace("-", "").isalnum()):
                break
            words.append(word)
        commands.add(" ".join(words))

def command_of(words):
    """The longest command name that `words` start with."""
    best = ""
    for name in commands:
        n = name.split()
        if words[:len(n)] == n and len(name) > len(best):
            best = name
    return best

values = {}  # file name -> parsed values
for name in sorted(os.listdir(out)):
    if not name.endswith(".json"):
        continue
    parsed = []
    for number, line in enumerate(open(os.path.join(out, name)), 1):
        try:
            parsed.append(json.loads(line))
        except ValueError as e:
            problems.append(f"{name}:{number}: not JSON ({e}): {line!r}")
    if not parsed:
        problems.append(f"{name}: no output")
    values[name[:-5]] = parsed

ran = {"info", "config", "config read", "state", "top", "list", "irq watch", "session"}
# In the session, each echo is followed by the command's own output; its result is the last
# value before the next echo (expect-error's comes after its command's).
session = values.get("session", [])
results = {}
name = None
for value in session:
    if isinstance(value, dict) and set(value) == {"command", "line"}:
        words = value["command"].split()
        name = command_of(words)
        ran.add(name)
        if name == "expect-error":
            ran.add(command_of(words[2:]))
        first = name not in results
        results.setdefault(name, None)
    elif name is not None and first:
        results[name] = value
missing = commands - ran
if missing:
    problems.append(f"commands never run with --json: {sorted(missing)}")

def expect(what, value, key, kind):
    if not isinstance(value, dict) or key not in value:
        problems.append(f"{what}: no {key!r} in {value!r}")
    elif not isinstance(value[key], kind) or isinstance(value[key], bool):
        problems.append(f"{what}: {key} is {type(value[key]).__name__}, expected "
                        f"{kind.__name__}: {value!r}")

# The 64-bit convention: 64-bit integers are strings, narrower ones numbers.
info = values["info"][0]
expect("info", info["regions"][0], "size", str)
expect("info", info["regions"][0], "index", int)
expect("info", info["limits"], "maxMemoryBytes", str)
state = values["state"][0]
expect("state", state, "sessions", int)
expect("state", state, "ownerLosses", str)
config = values["config"][0]
expect("config", config, "vendorId", int)
expect("config", config["bars"][0], "address", str)
expect("config", config["bars"][0], "size", str)
expect("config --raw", values["config-raw"][0], "data", str)
expect("config read", values["config-read"][0], "value", int)
expect("config read", values["config-read"][0], "offset", int)
event = values["irq-watch"][0]
expect("irq watch", event, "count", str)
expect("irq watch", event, "timestampNs", str)
expect("irq watch", event, "vector", int)
frames = values["top"]
if len(frames) != 2:
    problems.append(f"top --count 2: {len(frames)} frames")
else:
    expect("top", frames[1]["state"], "sessions", int)
    if frames[1]["rpcRates"] and not isinstance(frames[1]["rpcRates"][0]["okPerSecond"], float):
        problems.append(f"top: the second frame has no rates: {frames[1]['rpcRates'][0]}")
daemons = {d["socket"]: d for d in values["list"][0]["sockets"]}
if set(daemons) != {f"{sockdir}/s", f"{sockdir}/v"}:
    problems.append(f"list: sockets {sorted(daemons)}")
else:
    if not (daemons[f"{sockdir}/s"]["vfiod"] and daemons[f"{sockdir}/s"]["device"] == "sim:edu"):
        problems.append(f"list: the vfiod socket: {daemons[f'{sockdir}/s']}")
    if daemons[f"{sockdir}/v"]["vfiod"]:
        problems.append("list: the vfio-user socket taken for a vfiod")
expect("region read32", results.get("region read32"), "offset", str)
expect("region read32", results.get("region read32"), "value", int)
expect("region poll32", results.get("region poll32"), "reads", str)
expect("memory create", results.get("memory create"), "memoryId", str)
expect("memory dump", results.get("memory dump"), "data", str)
expect("memory compare", results.get("memory compare"), "length", str)
expect("dma unmap", results.get("dma unmap"), "unmappedBytes", str)
expect("irq wait", results.get("irq wait"), "count", str)
expect("expect-error", results.get("expect-error"), "expectedError", str)
if results.get("dma map") != {}:
    problems.append(f"dma map: {results.get('dma map')!r}, expected {{}}")

for p in problems:
    print("FAIL:", p)
print(f"checked {sum(len(v) for v in values.values())} JSON values from "
      f"{len(ran & commands)} of {len(commands)} commands")
sys.exit(1 if problems else 0)
PY

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "PASS"
