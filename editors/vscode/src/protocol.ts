// The sidecar's custom LSP surface, as the extension uses it (protocol.md,
// "The sidecar"; interface.md). Every type and name comes from the sidecar's
// own Rust types (src/lsp/protocol.rs) through protocol.generated.ts, which
// tests/tidy.rs keeps current. Pure — no `vscode` import — so the unit and
// RPC tests use the same names.

export * from './protocol.generated';
