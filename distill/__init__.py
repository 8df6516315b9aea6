"""distill: knowledge distillation."""
