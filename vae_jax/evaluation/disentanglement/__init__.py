"""Disentanglement metrics of a representation against known factors (disentanglement_lib's).

One module per metric family, each with disentanglement_lib's defaults
(``config/unsupervised_study_v1/metric_configs``): beta_vae.py, factor_vae.py,
mig.py, dci.py, sap.py, modularity.py, unsupervised.py; codes.py draws the
labelled codes they share; scoring.py scores a saved run (docs/disentanglement.md).
"""
