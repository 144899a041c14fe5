"""cuda_library: .cu sources compiled by nvcc, wrapped as a cc_library.

Each .cu file becomes one position-independent object (so it links into
test binaries and shared libraries alike) with code for Hopper (sm_90a, which
allows wgmma) and Ampere-class GPUs (sm_80). Compiling needs only nvcc, not a
GPU, so CI builds every kernel.
"""

NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-lineinfo",
    "--expt-relaxed-constexpr",
    "-Xcompiler=-fPIC",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-I.",
]

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], visibility = None):
    objs = []
    for src in srcs:
        stem = src[:-len(".cu")]
        obj = "_cuda_objs/%s/%s.o" % (name, stem)
        native.genrule(
            name = "%s_%s_cu" % (name, stem.replace("/", "_")),
            srcs = [src] + hdrs,
            outs = [obj],
            tools = ["@cuda//:nvcc", "@cuda//:bin/nvcc"],
            cmd = "$(location @cuda//:bin/nvcc) %s -c $(location %s) -o $@" % (
                " ".join(NVCC_FLAGS + copts),
                src,
            ),
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart"],
        linkstatic = True,
        visibility = visibility,
    )
