"""The serving core's vocabulary and its one request path: types, errors, validation, the DataPlane."""
