"""Builds convext._C: the C++ CPU kernels of convext's ops and, with a CUDA
build of torch and nvcc, the CUDA kernels. The SIMD kernels are compiled for
each instruction set in their own files and chosen at run time, so no -march
flag is needed (one would also bind the generic path to this host).

Environment:
  MAX_JOBS           parallel compile jobs (honoured by torch's build_ext)
  FORCE_CUDA         1: build the CUDA kernels even with no GPU present (needs a
                     CUDA build of torch and nvcc); 0: never build them
  TORCH_CUDA_ARCH_LIST  GPU architectures (default with FORCE_CUDA: "9.0+PTX")
  CONVEXT_CXXFLAGS   extra C++ flags, e.g. "-g" (default: none)
  CONVEXT_SANITIZE   sanitizers to build with, e.g. "address,undefined": a debug
                     build for tests only (see .ci/sanitize)
"""

import glob
import os
import shlex

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cpu_sources():
    files = ["csrc/module.cpp", "csrc/checks.cpp", "csrc/conv2d.cpp", "csrc/max_pool2d.cpp",
             "csrc/avg_pool2d.cpp", "csrc/autograd.cpp"]
    return files + sorted(glob.glob("csrc/cpu/*.cpp", root_dir=ROOT))


def cuda_sources():
    return sorted(glob.glob("csrc/cuda/*.cu", root_dir=ROOT))


def build_cuda():
    """With a CUDA torch and nvcc: when a GPU is present, or FORCE_CUDA=1."""
    force = os.environ.get("FORCE_CUDA")
    if force == "0" or torch.version.cuda is None or CUDA_HOME is None:
        if force == "1":
            raise RuntimeError(
                f"FORCE_CUDA=1 needs a CUDA build of torch (this is {torch.__version__}) and nvcc "
                f"(CUDA_HOME: {CUDA_HOME})"
            )
        return False
    return force == "1" or torch.cuda.is_available()


def extension():
    # -fopenmp makes at::parallel_for parallel; it resolves to the libgomp torch
    # already loaded, so torch.set_num_threads rules convext's threads too.
    # -ffp-contract=fast lets a * b + c become one FMA in the SIMD kernels.
    # -std=c++20: torch before 2.12 builds extensions as C++17 unless told.
    cxx_flags = ["-std=c++20", "-O3", "-fopenmp", "-ffp-contract=fast", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    cxx_flags += shlex.split(os.environ.get("CONVEXT_CXXFLAGS", ""))
    link_flags = ["-fopenmp"]
    sanitizers = os.environ.get("CONVEXT_SANITIZE", "")
    if sanitizers:
        # Every UBSan finding is an error, not a warning that scrolls past;
        # -fno-wrapv undoes Python's -fwrapv, which would hide signed overflow.
        sanitize = [f"-fsanitize={sanitizers}", "-fno-sanitize-recover=all"]
        cxx_flags += sanitize + ["-g", "-fno-omit-frame-pointer", "-fno-wrapv"]
        link_flags += sanitize
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not BUILD_CUDA:
        return CppExtension(name="convext._C", sources=cpu_sources(), include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    if os.environ.get("FORCE_CUDA") == "1" and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"  # H100 code, and PTX for later GPUs
    # The ATen CUDA headers include cuBLAS and cuSPARSE headers, which pip's
    # CUDA wheels keep under nvidia/cu13/include.
    include_dirs += glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu*", "include"))
    nvcc_flags = ["-O3", "-lineinfo", "-std=c++20"]
    return CUDAExtension(name="convext._C", sources=cpu_sources() + cuda_sources(), include_dirs=include_dirs,
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=link_flags)


class BuildExtensionInSourceToo(BuildExtension):
    """Also copies convext._C into the source package, as an in-place build does:
    Python started in this checkout imports ./convext before the installed
    package, and finds the same compiled ops there."""

    def run(self):
        super().run()
        if not self.inplace:
            self.copy_extensions_to_source()


BUILD_CUDA = build_cuda()
print(f"convext: building backends: cpu{', cuda' if BUILD_CUDA else ''} (torch {torch.__version__})"
      + (f", sanitizers {os.environ['CONVEXT_SANITIZE']}" if os.environ.get("CONVEXT_SANITIZE") else ""))

setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtensionInSourceToo},
)
