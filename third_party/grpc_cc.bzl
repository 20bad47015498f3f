"""cc_grpc_library: C++ messages and gRPC stubs for .proto files, with the system protoc.

Debian's Bazel has no gRPC rules and no protobuf repository to fetch, so a genrule runs
/usr/bin/protoc with /usr/bin/grpc_cpp_plugin. Generated headers go in `hdrs`, so includers see
them as declared inputs.
"""

def cc_grpc_library(name, srcs, deps = [], proto_imports = [], testonly = False, visibility = None):
    """Generates <file>.pb.{h,cc} and <file>.grpc.pb.{h,cc} for srcs; a cc_library `name`.

    proto_imports: .proto files that srcs import (protoc reads them; their C++ comes from deps).
    """
    outs_h = []
    outs_cc = []
    for src in srcs:
        stem = src[:-len(".proto")]
        outs_h += [stem + ".pb.h", stem + ".grpc.pb.h"]
        outs_cc += [stem + ".pb.cc", stem + ".grpc.pb.cc"]
    native.genrule(
        name = name + "_codegen",
        srcs = srcs + proto_imports,
        testonly = testonly,
        outs = outs_h + outs_cc,
        cmd = " ".join([
            "/usr/bin/protoc",
            "--proto_path=.",
            "--cpp_out=$(GENDIR)",
            "--grpc_out=$(GENDIR)",
            "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
        ] + ["$(location {})".format(s) for s in srcs]),
    )
    native.cc_library(
        name = name,
        srcs = outs_cc,
        hdrs = outs_h,
        deps = deps + ["//third_party:grpc", "//third_party:protobuf"],
        testonly = testonly,
        visibility = visibility,
    )
