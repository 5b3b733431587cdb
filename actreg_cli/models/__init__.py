"""Networks as engines build them: `plan.model_plan` turns a model config into layers."""
