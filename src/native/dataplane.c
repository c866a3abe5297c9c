#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "py_sigv4.h"

static PyMethodDef methods[] = {
    {"sigv4_check", zs_py_sigv4_check, METH_VARARGS, "SigV4 as the native plane checks it (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "zeroscale._dataplane", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dataplane(void) { return PyModule_Create(&module); }
