"""The keras engine: the reference, Keras layers trained with model.fit."""
