"""A repository of cc_library targets for system libraries, found with pkg-config.

The project builds on Debian's packages only (no registry but Debian's is reachable), so every
third-party library is the system one. BUILD files depend on //third_party:<name>, which
aliases the targets generated here.
"""

# Target name -> the pkg-config modules it links, and extra linker flags pkg-config lacks.
_LIBS = {
    "absl": {
        "modules": [
            "absl_base",
            "absl_flags",
            "absl_flags_parse",
            "absl_flags_usage",
            "absl_hash",
            "absl_random_random",
            "absl_raw_hash_set",
            "absl_status",
            "absl_statusor",
            "absl_str_format",
            "absl_strings",
            "absl_synchronization",
            "absl_time",
        ],
        "extra": [],
    },
    "grpc": {"modules": ["grpc++"], "extra": ["-lgrpc++_reflection"]},
    "protobuf": {"modules": ["protobuf"], "extra": []},
    "seccomp": {"modules": ["libseccomp"], "extra": []},
    # Header-only: vfioctl's command line (CLI11) and its non-protobuf JSON (nlohmann/json).
    "cli11": {"modules": ["CLI11"], "extra": []},
    "nlohmann_json": {"modules": ["nlohmann_json"], "extra": []},
    "gtest": {"modules": ["gtest", "gmock"], "extra": ["-lpthread"]},
    "gtest_main": {"modules": ["gtest_main", "gmock"], "extra": ["-lpthread"]},
}

def _pkg_config(ctx, flag, modules):
    result = ctx.execute(["pkg-config", flag] + modules)
    if result.return_code != 0:
        fail("pkg-config {} {} failed (run tools/bootstrap.sh): {}".format(
            flag,
            " ".join(modules),
            result.stderr,
        ))
    return result.stdout.strip().split(" ") if result.stdout.strip() else []

def _system_libs_impl(ctx):
    lines = ['package(default_visibility = ["//visibility:public"])', ""]
    for name, spec in _LIBS.items():
        cflags = _pkg_config(ctx, "--cflags", spec["modules"])
        libs = _pkg_config(ctx, "--libs", spec["modules"]) + spec["extra"]

        # Include directories under /usr/include need no flag; others become -isystem.
        copts = [f for f in cflags if f and f != "-I/usr/include"]
        lines.append("cc_library(")
        lines.append('    name = "{}",'.format(name))
        lines.append("    copts = {},".format(repr(copts)))
        lines.append("    linkopts = {},".format(repr(libs)))
        lines.append(")")
        lines.append("")
    ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(ctx.name))
    ctx.file("BUILD", "\n".join(lines))

system_libs = repository_rule(
    implementation = _system_libs_impl,
    local = True,
    configure = True,
)
