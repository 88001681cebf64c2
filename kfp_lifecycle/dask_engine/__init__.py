"""The Dask engine: the data stage and training on a Dask cluster, for tables beyond one machine.

One module per lifecycle step it covers (ingest, validate, profile, clean, split, preprocess,
train), each a set of plain functions over Dask DataFrames; `engine` says which engine a
run uses and where the cluster comes from, `cluster` opens the client. The step components
call into this package only when the engine is dask, so the pandas path imports no Dask.
What comes out is what the pandas engine makes: Parquet tables (here partitioned, one file
per partition, which pandas reads as well) and the same kind of fitted scikit-learn
Pipeline in the bundle, so serving and batch scoring are unchanged.
"""
