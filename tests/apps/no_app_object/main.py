from fastapi import FastAPI

application_factory = FastAPI
