-- Config for `vim.lsp.enable('threadsync')` (Neovim 0.11+). It is the same
-- single client that require('threadsync').setup() starts: same name, cmd,
-- init_options and handlers, and `reuse_client` makes every buffer share it.
-- The root is the threads directory, so no project file is needed.
local cfg = require('threadsync').lsp_config()
return cfg
