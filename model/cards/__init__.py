"""The model card and its checks: what a card says about its model (card_spec), what loaders check in a card and a
model file before any framework reads them (model_checks), the known answers every worker checks, and the flags that
declare a card."""
