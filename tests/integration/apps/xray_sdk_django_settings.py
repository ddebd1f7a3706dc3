"""Settings of a Django service instrumented the way the X-Ray SDK's docs show (see xray_sdk_django.py)."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "xray_sdk_django"
DATABASES: dict[str, dict[str, str]] = {}
INSTALLED_APPS = ["aws_xray_sdk.ext.django"]
MIDDLEWARE = [
    "aws_xray_sdk.ext.django.middleware.XRayMiddleware",
    "django.middleware.common.CommonMiddleware",
]
XRAY_RECORDER = {
    "AWS_XRAY_DAEMON_ADDRESS": os.environ["SDK_DAEMON_ADDRESS"],
    "AWS_XRAY_TRACING_NAME": "orders-api",
    "AUTO_INSTRUMENT": False,
    "PATCH_MODULES": ["sqlite3"],
}
