"""`modelbuild serve`: a model artifact behind LitServe, with the operations a deployment needs."""
