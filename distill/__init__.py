"""distill: knowledge distillation."""

from distill import resolvers as _resolvers

_resolvers.register()
