// convext._C: a Python module with no functions of its own. Importing it runs
// the TORCH_LIBRARY registrations; the ops are called through torch.ops.convext.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module);
}
