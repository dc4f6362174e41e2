"""Recipes: each assembles one kind of run (pretraining, distillation, fine-tuning) from the layers below."""
