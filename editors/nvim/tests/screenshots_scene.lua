-- Scene for screenshots.sh (not a test): a real Neovim UI with the plugin's
-- statusline, first synced, then with a title conflict. Driven by files in
-- $TS_SHOT_DIR: writes "synced.ready" / "conflict.ready", waits for
-- "next" / "quit".
local dir = assert(vim.env.TS_SHOT_DIR)
local bin = assert(vim.env.THREADSYNC_BIN)
local server = { url = vim.env.TS_SHOT_SERVER, token = vim.env.TS_SHOT_TOKEN }
local has_011 = vim.fn.has('nvim-0.11') == 1

vim.cmd('runtime plugin/threadsync.lua')
vim.cmd('filetype plugin on | syntax on')
vim.o.laststatus = 2
vim.o.ruler = false
vim.o.showmode = false
vim.o.number = true
vim.o.statusline = " threads/%t %m%=%{v:lua.require'threadsync'.statusline()} "

local ts = require('threadsync')
ts.setup({
  path = bin,
  server = server.url,
  token = server.token,
  threads_dir = dir .. '/a/threads',
  state_dir = dir .. '/a/state',
  log_file = dir .. '/a/sidecar.log',
})

local function req(client, method, params)
  local done, res
  local cb = function(err, r)
    done, res = true, r or err
  end
  if has_011 then
    client:request(method, params, cb)
  else
    client.request(method, params, cb)
  end
  vim.wait(10000, function()
    return done
  end, 20)
  return res
end

local function touch(name)
  local f = io.open(dir .. '/' .. name, 'w')
  f:write('1')
  f:close()
end

local function wait_file(name, then_fn)
  local timer = vim.uv.new_timer()
  timer:start(100, 100, vim.schedule_wrap(function()
    if vim.uv.fs_stat(dir .. '/' .. name) then
      timer:stop()
      timer:close()
      then_fn()
    end
  end))
end

vim.wait(10000, function()
  return ts.status().state == 'synced' and ts.get_client() and ts.get_client().initialized
end, 20)
local a = ts.get_client()
local id = req(a, 'threadsync/createThread', { title = 'Fix the parser' }).threadId
req(a, 'threadsync/appendMessage', { threadId = id, role = 'user', content = 'Why does the parser choke on trailing commas?' })
req(a, 'threadsync/appendMessage', { threadId = id, role = 'assistant', content = 'The lexer drops the comma token before the closing bracket.' })
vim.wait(10000, function()
  return ts.status().state == 'synced' and ts.status().pending == 0
end, 20)
vim.cmd('edit ' .. vim.fn.fnameescape(dir .. '/a/threads/' .. id .. '.jsonl'))
vim.cmd('redraw!')
vim.defer_fn(function()
  touch('synced.ready')
end, 500)

wait_file('next', function()
  -- A second machine: its own sidecar, dirs and client id.
  local cfg = {
    name = 'peer',
    cmd = { bin, 'lsp' },
    root_dir = dir .. '/b',
    init_options = { server = server.url, token = server.token, threadsDir = dir .. '/b/threads', stateDir = dir .. '/b/state' },
  }
  local bid = has_011 and vim.lsp.start(cfg, { attach = false }) or vim.lsp.start_client(cfg)
  local b = vim.lsp.get_client_by_id(bid)
  vim.wait(10000, function()
    return b.initialized and #(req(b, 'threadsync/listThreads', {}).threads or {}) == 1
  end, 50)
  ts.configure({ server = 'http://127.0.0.1:9' })
  vim.wait(10000, function()
    return ts.status().state == 'offline'
  end, 20)
  req(a, 'threadsync/setTitle', { threadId = id, title = 'Fix the parser (mine)' })
  req(b, 'threadsync/setTitle', { threadId = id, title = 'Fix the lexer (theirs)' })
  vim.wait(10000, function()
    local s = req(b, 'threadsync/getStatus', {})
    return s.state == 'synced' and s.pending == 0
  end, 50)
  ts.configure({ server = server.url })
  vim.wait(10000, function()
    return ts.status().state == 'conflict'
  end, 20)
  vim.cmd('checktime')
  vim.cmd('redraw!')
  vim.defer_fn(function()
    touch('conflict.ready')
  end, 500)
  wait_file('quit', function()
    vim.cmd('qa!')
  end)
end)
