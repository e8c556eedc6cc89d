"""Training the model: labeled data, frozen-encoder heads, fine-tuning, evaluation, model
cards and the pipeline that turns them into a version. Imports `serving`'s model side only."""
