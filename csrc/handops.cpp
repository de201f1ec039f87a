// handops: every op schema, in one TORCH_LIBRARY block. The CPU kernels live in csrc/cpu/ and
// register themselves with TORCH_LIBRARY_IMPL(handops, CPU, m); the CUDA kernels are Triton and are
// registered from Python (handops/ops/*.py). handops/_extension.py repeats these schemas for the
// pure-Python install, and tests/test_tree_marginals.py::test_python_schemas_match_the_extension checks that the two agree.
#include <Python.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpu_capability.h"

// setup.py generates this header in its build directory: HANDOPS_BUILD_INFO_JSON, the JSON object it
// also writes to handops/_build_info.py (torch version built against, flags, ...).
#if __has_include("handops_build_info.h")
#include "handops_build_info.h"
#else
#define HANDOPS_BUILD_INFO_JSON "{}"
#endif

namespace {

// _C._build_info() -> str: the JSON object of setup.py, with the compiler's version added.
PyObject* build_info(PyObject*, PyObject*) {
  return Py_BuildValue("(ss)", HANDOPS_BUILD_INFO_JSON,
#ifdef __VERSION__
                       __VERSION__
#else
                       "unknown"
#endif
  );
}

// _C._cpu_capability() -> (in use, best supported), e.g. ("avx2", "avx512").
PyObject* cpu_capability(PyObject*, PyObject*) {
  return Py_BuildValue("(ss)", handops::cpu_capability_name(handops::cpu_capability()),
                       handops::cpu_capability_name(handops::supported_cpu_capability()));
}

// _C._set_cpu_capability(name): for tests; ValueError if unknown or unsupported by this CPU.
PyObject* set_cpu_capability(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  handops::CpuCapability capability;
  if (!handops::parse_cpu_capability(name, &capability)) {
    PyErr_Format(PyExc_ValueError, "unknown CPU capability '%s' (default, avx2 or avx512)", name);
    return nullptr;
  }
  if (!handops::set_cpu_capability(capability)) {
    PyErr_Format(PyExc_ValueError, "this CPU does not support '%s' (at most '%s')", name,
                 handops::cpu_capability_name(handops::supported_cpu_capability()));
    return nullptr;
  }
  Py_RETURN_NONE;
}

// _C._openmp() -> (the _OPENMP version the extension was compiled with or 0, omp_get_max_threads() or 1).
PyObject* openmp(PyObject*, PyObject*) {
#ifdef _OPENMP
  return Py_BuildValue("(ii)", int(_OPENMP), omp_get_max_threads());
#else
  return Py_BuildValue("(ii)", 0, 1);
#endif
}

PyMethodDef methods[] = {
    {"_build_info", build_info, METH_NOARGS, "(build info JSON, compiler version)"},
    {"_cpu_capability", cpu_capability, METH_NOARGS, "(instruction set in use, best supported)"},
    {"_set_cpu_capability", set_cpu_capability, METH_O, "select the kernel variant (tests)"},
    {"_openmp", openmp, METH_NOARGS, "(_OPENMP, omp_get_max_threads())"},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
// Importing handops._C runs the registrations below; its few functions serve handops.show_config().
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(handops, m) {
  // Sum-product marginals of a mixture of tree models on 2-D maps. unary [B,K,H,W],
  // pairwise [Bp,L,M,kh,kw] (Bp in {1,B}), weights [B,L]; messages: flat (src, dst) schedule;
  // level_sizes: messages per independent level. Returns marginals [B,K,H,W], the normalised
  // messages [B,L,M,H,W] and their scales [B,L,M] (the peak of each raw message, 0 for a message
  // replaced by ones); the backward needs both.
  m.def("tree_marginals(Tensor unary, Tensor pairwise, Tensor weights, int[] messages, int[] level_sizes) -> (Tensor, Tensor, Tensor)");
  m.def(
      "tree_marginals_backward(Tensor grad, Tensor unary, Tensor pairwise, Tensor weights, Tensor messages, Tensor scales, "
      "int[] messages_schedule, int[] level_sizes) -> (Tensor, Tensor, Tensor)");
  // Edge-aware graph convolution (SIA-GCN): x [B,K,H,W], weight [Hd,E,kh,kw], bias [Hd,E] or None,
  // edges: flat (src, dst) pairs. Returns [B,Hd,K,H,W]. The backward returns the gradients of x,
  // weight and a bias (always computed: it is cheap).
  m.def("edge_conv(Tensor x, Tensor weight, Tensor? bias, int[] edges) -> Tensor");
  m.def("edge_conv_backward(Tensor grad, Tensor x, Tensor weight, int[] edges) -> (Tensor, Tensor, Tensor)");
  // Max-product on one tree model: max-marginals [B,K,H,W] and the MAP configuration [B,K,2] (int64).
  m.def("tree_map(Tensor unary, Tensor pairwise, int[] messages, int[] level_sizes) -> (Tensor, Tensor)");
  // MANO (thesis Sec. 2.5): betas [B,S], pose [B,16,3] axis-angle or [B,16,3,3] matrices, transl [B,3] or
  // None, the model tensors v_template [V,3], shapedirs [V,3,S'], posedirs [V,3,135], J_template [16,3] and
  // J_shapedirs [16,3,S'] (the joint regressor applied to the template and the blend shapes), weights [V,16],
  // parents (16, parents[k] < k) and keypoint_ids (id < 16: joint, else 16 + vertex). Returns vertices [B,V,3],
  // keypoints [B,n,3], joints [B,16,3] and the relative transforms A_k [B,16,4,4], transl included. The
  // backward takes any subset of the output gradients and returns those of betas, pose and transl (the
  // model tensors are constants). mano_keypoints_jacobian returns the keypoints and d keypoints / d pose
  // [B,n,3,48] for an axis-angle pose.
  m.def(
      "mano_skinning(Tensor betas, Tensor pose, Tensor? transl, Tensor v_template, Tensor shapedirs, Tensor posedirs, Tensor J_template, "
      "Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "mano_skinning_backward(Tensor? grad_vertices, Tensor? grad_keypoints, Tensor? grad_joints, Tensor? grad_transforms, Tensor betas, Tensor pose, Tensor v_template, "
      "Tensor shapedirs, Tensor posedirs, Tensor J_template, Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor, Tensor)");
  m.def(
      "mano_keypoints_jacobian(Tensor betas, Tensor pose, Tensor? transl, Tensor v_template, Tensor shapedirs, Tensor posedirs, "
      "Tensor J_template, Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor)");
}
