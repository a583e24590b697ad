"""An app that builds fine and dies as it starts: a missing setting, as apps often do."""

import os

from fastapi import FastAPI

DATABASE_URL = os.environ["DATABASE_URL_THAT_IS_NOT_SET"]
app = FastAPI()
