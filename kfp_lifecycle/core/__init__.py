"""What a served model needs to load and predict, and nothing else: no kfp import.

The bundle format, the input schema, the tasks, the errors they raise and the transformer
classes pickled into every bundle live here, so a model server (and `lifecycle serve`)
starts without importing Kubeflow Pipelines, and moving a pipeline step never changes the
module paths recorded in a registered model's pickle.
"""
