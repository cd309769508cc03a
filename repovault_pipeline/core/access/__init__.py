"""Who may call the HTTP API: RepoVault's own tokens and Keycloak's JWTs."""
