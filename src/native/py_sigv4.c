#include "py_sigv4.h"

PyObject *zs_py_sigv4_check(PyObject *self, PyObject *args) { Py_RETURN_NONE; }
