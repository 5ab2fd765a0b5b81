-- vim.lsp.enable('threadsync') (Neovim 0.11+) uses lsp/threadsync.lua and
-- shares the single client with setup().
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

local function clients()
  return vim.lsp.get_clients({ name = 'threadsync', _uninitialized = true })
end

H.main(function()
  H.load_plugin()
  if vim.fn.has('nvim-0.11') == 0 then
    H.skip("vim.lsp.enable('threadsync')", 'needs Neovim 0.11+')
    return
  end
  local server = H.server()
  local ts = require('threadsync')
  local files = H.mkdir('files')
  vim.cmd('filetype on') -- as in a user's config (-u NONE leaves it off)

  H.case("vim.lsp.enable('threadsync') alone (env config, binary on PATH) starts one client", function()
    local base = H.mkdir('enable-env')
    vim.env.THREADSYNC_SERVER = server.url
    vim.env.THREADSYNC_TOKEN = server.token
    vim.env.THREADSYNC_THREADS_DIR = base .. '/threads'
    vim.env.THREADSYNC_STATE_DIR = base .. '/state'
    vim.env.PATH = vim.fs.dirname(H.bin) .. ':' .. vim.env.PATH
    vim.lsp.enable('threadsync')
    vim.cmd('edit ' .. files .. '/one.txt')
    H.wait('a client', 5000, function()
      return #clients() == 1
    end)
    H.wait_statusline('TS ✓')
    vim.cmd('edit ' .. files .. '/two.lua')
    vim.cmd('edit ' .. files .. '/three.md')
    H.eq(1, #clients(), 'one client for three files')
    local id = clients()[1].id
    H.eq(id, ts.start(), 'require("threadsync").start() reuses it')
    ts.setup({}) -- same (default) options: keeps the client
    H.eq(1, #clients(), 'clients after setup()')
    H.eq(id, ts.get_client().id, 'same client after setup()')
    -- The handlers are the plugin's: a remote change fires the event.
    local peer = H.peer(server, 'b')
    local updates = H.capture_event('ThreadSyncThreadUpdated')
    peer.request('threadsync/createThread', { title = 'via enable' })
    H.wait('ThreadSyncThreadUpdated', 10000, function()
      return updates[1] and updates[1].title == 'via enable' and updates[1].origin == 'remote'
    end)
    H.ok(vim.uv.fs_stat(base .. '/threads'), 'THREADSYNC_THREADS_DIR used')
    peer.client:stop(true)
    ts.stop()
    vim.lsp.enable('threadsync', false)
    H.eq(0, #clients(), 'clients after stop')
  end)

  H.case('setup() first, then vim.lsp.enable: buffers attach to the same single client', function()
    local opts = H.opts(server)
    ts.setup(opts)
    H.eq(1, #clients(), 'client after setup()')
    local id = clients()[1].id
    H.wait_statusline('TS ✓')
    vim.lsp.enable('threadsync')
    vim.cmd('edit ' .. files .. '/four.txt')
    H.wait('buffer attached', 5000, function()
      return #vim.lsp.get_clients({ bufnr = 0, name = 'threadsync' }) == 1
    end)
    H.eq(id, vim.lsp.get_clients({ bufnr = 0, name = 'threadsync' })[1].id, 'attached client')
    H.eq(1, #clients(), 'clients')
    H.eq(opts.threads_dir, vim.lsp.config.threadsync.init_options.threadsDir, 'vim.lsp.config has setup() options')
  end)
end)
