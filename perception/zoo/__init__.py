"""The model zoo: named models (`zoo.yaml`, our own network shipped in `embedded/`), their
specs read as data, and their files pulled by pinned URL or mirror with checked sha256."""
