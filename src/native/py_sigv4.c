/* The Python binding of zs_sigv4_check, for the tests that hold it to api/sigv4.py (tests/native). */
#include "py_sigv4.h"

#include "sigv4.h"

typedef struct {
    PyObject *secrets; /* dict[str, str], borrowed from the call's arguments */
    PyObject *held;    /* the secret last handed out, kept alive until the check ends */
    int failed;        /* a Python error is set */
} lookup_ctx;

static const char *lookup_secret(void *opaque, const char *akid, size_t akid_len, size_t *secret_len) {
    lookup_ctx *ctx = opaque;
    if (ctx->failed) return NULL;
    PyObject *key = PyUnicode_DecodeASCII(akid, (Py_ssize_t)akid_len, "strict");
    if (key == NULL) {
        ctx->failed = 1;
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(ctx->secrets, key); /* borrowed */
    Py_DECREF(key);
    if (value == NULL) {
        if (PyErr_Occurred()) ctx->failed = 1;
        return NULL;
    }
    if (!PyUnicode_Check(value)) { /* the dict changed under us since its check */
        PyErr_SetString(PyExc_TypeError, "sigv4_check: secrets must map str to str");
        ctx->failed = 1;
        return NULL;
    }
    Py_ssize_t size = 0;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &size);
    if (utf8 == NULL) {
        ctx->failed = 1;
        return NULL;
    }
    Py_INCREF(value);
    Py_XSETREF(ctx->held, value);
    *secret_len = (size_t)size;
    return utf8;
}

PyObject *zs_py_sigv4_check(PyObject *self, PyObject *args) {
    (void)self;
    const char *method, *path, *query, *body, *region, *service;
    Py_ssize_t method_len, path_len, query_len, body_len;
    PyObject *header_list, *secrets;
    long long now;
    if (!PyArg_ParseTuple(args, "y#y#y#O!y#ssLO!:sigv4_check", &method, &method_len, &path, &path_len, &query,
                          &query_len, &PyList_Type, &header_list, &body, &body_len, &region, &service, &now,
                          &PyDict_Type, &secrets))
        return NULL;

    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(secrets, &pos, &key, &value)) {
        if (!PyUnicode_Check(key) || !PyUnicode_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "sigv4_check: secrets must map str to str");
            return NULL;
        }
    }

    /* A tuple of the list's items: it keeps every header's bytes alive whatever happens to the list. */
    PyObject *items = PyList_AsTuple(header_list);
    if (items == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    zs_header *headers = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(zs_header));
    if (headers == NULL) {
        Py_DECREF(items);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "sigv4_check: headers must be a list of (bytes, bytes) tuples");
            PyMem_Free(headers);
            Py_DECREF(items);
            return NULL;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *val = PyTuple_GET_ITEM(pair, 1);
        headers[i].name = PyBytes_AS_STRING(name);
        headers[i].name_len = (size_t)PyBytes_GET_SIZE(name);
        headers[i].value = PyBytes_AS_STRING(val);
        headers[i].value_len = (size_t)PyBytes_GET_SIZE(val);
    }

    lookup_ctx ctx = {secrets, NULL, 0};
    const char *akid = NULL;
    size_t akid_len = 0;
    int rc = zs_sigv4_check(method, (size_t)method_len, path, (size_t)path_len, query, (size_t)query_len,
                            headers, (size_t)n, (const uint8_t *)body, (size_t)body_len, region, service,
                            (int64_t)now, lookup_secret, &ctx, &akid, &akid_len);
    PyObject *result = NULL;
    if (ctx.failed)
        result = NULL; /* the error the lookup met is set */
    else if (rc == ZS_SIGV4_OK)
        result = PyUnicode_DecodeASCII(akid, (Py_ssize_t)akid_len, "strict");
    else
        result = Py_NewRef(Py_None);
    Py_XDECREF(ctx.held);
    PyMem_Free(headers);
    Py_DECREF(items);
    return result;
}
