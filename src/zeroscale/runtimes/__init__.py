"""Inside a worker process: the SageMaker container contract and the handler contract per framework.

The bottom layer: imports nothing from zeroscale except ``zeroscale.errors``. Importing ``registry`` or
``images`` stays cheap (no numpy, no framework); ``worker`` is the process entry point.
"""
