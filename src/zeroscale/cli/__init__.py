"""The zeroscale command line: ``serve`` builds Settings from flags/environment; every other command is a
boto3 client of a running server."""
