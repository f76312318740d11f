"""The machinery every stage shares: the Stage declaration, the registry and keys, code versions, the artefact store and layout, the runner."""
