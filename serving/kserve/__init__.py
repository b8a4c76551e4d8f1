"""The KServe v2 / Triton inference protocol, beside our own API (docs/serving.md).

`tensors.py` (the protocol's tensors: datatypes, raw bytes, JSON lists), `models.py` (the models
served: the whole perception and each loaded network alone), `inference.py` (one infer request
through the service's limits and batcher), `http_body.py` (the HTTP infer body, JSON and binary
tensor extension). The transports: serving/http/routes/kserve.py and serving/kserve_grpc.py.
"""
