-- threadsync for Neovim: one `threadsync lsp` sidecar per Neovim, a cached
-- status for statuslines, and the :ThreadSync commands (see :help threadsync).
local M = {}

local config = require('threadsync.config')
local protocol = require('threadsync.protocol')

local has_011 = vim.fn.has('nvim-0.11') == 1
local NAME = 'threadsync'

---The sidecar's `threadsync/status` object, plus the plugin's own states
---"starting" and "stopped".
---@class threadsync.Status
---@field state 'synced'|'syncing'|'pending'|'offline'|'error'|'conflict'|'unauthorized'|'starting'|'stopped'
---@field pending integer      Threads with changes not yet on the server
---@field conflicts integer    Conflicts waiting to be resolved
---@field online boolean       Whether the server is reachable
---@field lastSync? string     RFC 3339 time of the last successful push or pull
---@field message? string      Human-readable detail

---@type threadsync.Opts
M.opts = config.resolve({})
M._setup_called = false
---@type integer?
M._client_id = nil

local function stopped_status()
  return { state = 'stopped', pending = 0, conflicts = 0, online = false, lastSync = nil }
end

---@type threadsync.Status
M._status = stopped_status()

-- ---------------------------------------------------------------------------
-- Small 0.10 / 0.11 compatibility helpers
-- ---------------------------------------------------------------------------

---@param client vim.lsp.Client
local function client_request(client, method, params, handler)
  if has_011 then
    return client:request(method, params, handler)
  end
  return client.request(method, params, handler)
end

---@param client vim.lsp.Client
local function client_stop(client, force)
  if has_011 then
    return client:stop(force)
  end
  return client.stop(force)
end

---@param client vim.lsp.Client
local function client_is_stopped(client)
  if has_011 then
    return client:is_stopped()
  end
  return client.is_stopped()
end

local function schedule(fn)
  if vim.in_fast_event() then
    vim.schedule(fn)
  else
    fn()
  end
end

local function fire(pattern, data)
  schedule(function()
    pcall(vim.api.nvim_exec_autocmds, 'User', { pattern = pattern, modeline = false, data = data })
  end)
end

local function redraw()
  schedule(function()
    pcall(vim.cmd, 'redrawstatus!')
    if package.loaded['lualine'] then
      pcall(function()
        require('lualine').refresh({ place = { 'statusline' } })
      end)
    end
  end)
end

---@param msg string
---@param level? integer
function M.notify(msg, level)
  vim.notify('threadsync: ' .. msg, level or vim.log.levels.INFO, { title = 'threadsync' })
end

-- ---------------------------------------------------------------------------
-- Status cache
-- ---------------------------------------------------------------------------

---@param status threadsync.Status
local function set_status(status)
  M._status = status
  redraw()
  fire('ThreadSyncStatus', status)
end

---@param params table
---@param client_id? integer
function M._on_status(params, client_id)
  if type(params) ~= 'table' or type(params.state) ~= 'string' then
    return
  end
  if client_id and M._client_id and client_id ~= M._client_id then
    return -- a client being replaced by :ThreadSync restart
  end
  local s = {
    state = params.state,
    pending = tonumber(params.pending) or 0,
    conflicts = tonumber(params.conflicts) or 0,
    online = params.online == true,
    lastSync = type(params.lastSync) == 'string' and params.lastSync or nil,
    message = type(params.message) == 'string' and params.message or nil,
  }
  set_status(s)
end

---The last known status (a copy). Never asks the sidecar.
---@return threadsync.Status
function M.status()
  return vim.deepcopy(M._status)
end

local function plural(n, word)
  return ('%d %s%s'):format(n, word, n == 1 and '' or 's')
end

---Short statusline text for a status.
---@param s threadsync.Status
---@param icons threadsync.Icons
---@return string
function M.format_status(s, icons)
  local p = icons.prefix ~= '' and (icons.prefix .. ' ') or ''
  local pending = (s.pending or 0) > 0 and (icons.pending .. tostring(s.pending)) or nil
  local st = s.state
  if st == 'synced' then
    return p .. icons.synced
  elseif st == 'syncing' then
    return p .. icons.syncing .. (pending and (' ' .. pending) or '')
  elseif st == 'pending' then
    return p .. (pending or (icons.pending .. '0'))
  elseif st == 'offline' then
    return p .. icons.offline .. (pending and (' ' .. pending) or '')
  elseif st == 'conflict' then
    return p .. icons.conflict .. ' ' .. plural(s.conflicts or 0, 'conflict')
  elseif st == 'unauthorized' then
    return p .. icons.unauthorized
  elseif st == 'error' then
    return p .. icons.error
  elseif st == 'starting' then
    return p .. icons.starting
  elseif st == 'stopped' then
    return p .. icons.stopped
  end
  return p .. tostring(st)
end

---Statusline text from the cache, e.g. "TS ✓", "TS ↑2", "TS offline ↑1",
---"TS ⚠ 1 conflict". Cheap: never talks to the sidecar.
---Use in 'statusline': %{v:lua.require'threadsync'.statusline()}
---@return string
function M.statusline()
  local ok, text = pcall(function()
    local fmt = M.opts.statusline and M.opts.statusline.format
    if fmt then
      return fmt(M.status(), M.opts.icons)
    end
    return M.format_status(M._status, M.opts.icons)
  end)
  if not ok then
    return 'TS ?'
  end
  return text or ''
end

-- ---------------------------------------------------------------------------
-- Client configuration
-- ---------------------------------------------------------------------------

---The sidecar log file (THREADSYNC_LOG_FILE), or nil when `log_file = false`.
---@return string?
function M.log_file()
  if M.opts.log_file == false then
    return nil
  end
  return M.opts.log_file or vim.fs.joinpath(vim.fn.stdpath('log'), 'threadsync.log')
end

---Finds the sidecar command.
---@param opts? threadsync.Opts
---@return string[]? cmd, string? err
function M.resolve_cmd(opts)
  opts = opts or M.opts
  local fix = 'install it with `cargo install --path .` in the threadsync checkout, or set '
    .. "require('threadsync').setup({ path = '/path/to/threadsync' })"
  if opts.cmd then
    local exe = opts.cmd[1]
    if vim.fn.executable(exe) ~= 1 then
      return nil, ('binary not found: cmd[1] = %q is not executable; fix `cmd` in setup(), or %s'):format(exe, fix)
    end
    return vim.deepcopy(opts.cmd)
  end
  if opts.path then
    if vim.fn.executable(opts.path) ~= 1 then
      return nil,
        ('binary not found: path = %q is not an executable file; fix `path` in setup(): %s'):format(opts.path, fix)
    end
    return { vim.fn.fnamemodify(opts.path, ':p'), 'lsp' }
  end
  if vim.fn.executable('threadsync') == 1 then
    return { vim.fn.exepath('threadsync'), 'lsp' }
  end
  return nil, 'binary not found: `threadsync` is not on $PATH; ' .. fix
end

---initializationOptions for the sidecar; unset values are left out so that
---the sidecar's env / config file / defaults apply.
---@param opts? threadsync.Opts
---@return table
function M.init_options(opts)
  opts = opts or M.opts
  local token = opts.token
  if type(token) == 'function' then
    local ok, v = pcall(token)
    if not ok then
      M.notify('the token function failed: ' .. tostring(v), vim.log.levels.ERROR)
      v = nil
    end
    token = v
  end
  local o = {
    server = opts.server,
    token = (type(token) == 'string' and token ~= '') and token or nil,
    threadsDir = opts.threads_dir and vim.fs.normalize(opts.threads_dir) or nil,
    stateDir = opts.state_dir and vim.fs.normalize(opts.state_dir) or nil,
    poll = opts.poll,
  }
  if next(o) == nil then
    return vim.empty_dict()
  end
  return o
end

function M.handlers()
  return {
    [protocol.notifications.status] = function(_, params, ctx)
      M._on_status(params, ctx and ctx.client_id)
    end,
    [protocol.notifications.threadUpdated] = function(_, params)
      fire('ThreadSyncThreadUpdated', params)
    end,
    [protocol.notifications.threadStatus] = function(_, params)
      fire('ThreadSyncThreadStatus', params)
    end,
    [protocol.notifications.rollback] = function(_, params)
      params = params or {}
      if M.opts.notify_rollback ~= false then
        M.notify(
          ('the server refused a change to thread %s and it was undone locally: %s'):format(
            tostring(params.threadId),
            tostring(params.reason)
          ),
          vim.log.levels.WARN
        )
      end
      fire('ThreadSyncRollback', params)
    end,
  }
end

local function on_init(client)
  M._client_id = client.id
  client_request(client, protocol.requests.getStatus, vim.empty_dict(), function(err, result)
    if err then
      return
    end
    M._on_status(result, client.id)
  end)
end

local function on_exit(code, signal, client_id)
  schedule(function()
    if M._client_id == nil or M._client_id == client_id then
      M._client_id = nil
      local s = stopped_status()
      if code ~= 0 and not M._stopping then
        s.message = ('the sidecar exited (code %s, signal %s); see :ThreadSync log'):format(code, signal)
      end
      set_status(s)
    end
  end)
end

---The LSP client configuration (also what lsp/threadsync.lua returns).
---@param opts? threadsync.Opts
---@return vim.lsp.ClientConfig? config, string? err
function M.lsp_config(opts)
  opts = opts or M.opts
  local cmd, err = M.resolve_cmd(opts)
  local env = vim.deepcopy(opts.env or {})
  local log = M.log_file()
  if log then
    vim.fn.mkdir(vim.fs.dirname(log), 'p')
    env.THREADSYNC_LOG_FILE = env.THREADSYNC_LOG_FILE or log
    env.THREADSYNC_LOG = env.THREADSYNC_LOG or opts.log_level
  end
  local root = config.effective(opts, 'threadsDir')
  local cfg = {
    name = NAME,
    cmd = cmd or { 'threadsync', 'lsp' },
    cmd_env = env,
    init_options = M.init_options(opts),
    root_dir = root,
    workspace_folders = { { name = 'threadsync', uri = vim.uri_from_fname(root) } },
    handlers = M.handlers(),
    on_init = on_init,
    on_exit = on_exit,
    -- One client per Neovim, whatever buffer or root asks for it.
    reuse_client = function(client, conf)
      return client.name == conf.name and not client_is_stopped(client)
    end,
    capabilities = vim.tbl_deep_extend(
      'force',
      vim.lsp.protocol.make_client_capabilities(),
      { window = { workDoneProgress = true } }
    ),
  }
  return cfg, err
end

-- ---------------------------------------------------------------------------
-- Client lifecycle
-- ---------------------------------------------------------------------------

---The running client, if any.
---@return vim.lsp.Client?
function M.get_client()
  -- get_clients() leaves out clients still initializing: look at ours first.
  if M._client_id then
    local c = vim.lsp.get_client_by_id(M._client_id)
    if c and not client_is_stopped(c) then
      return c
    end
  end
  for _, c in ipairs(vim.lsp.get_clients({ name = NAME, _uninitialized = true })) do
    if not client_is_stopped(c) then
      return c
    end
  end
  return nil
end

---Starts the client unless one runs. Needs no open file.
---@return integer? client_id
function M.start()
  local existing = M.get_client()
  if existing then
    return existing.id
  end
  local cfg, err = M.lsp_config()
  if err then
    M.notify(err, vim.log.levels.ERROR)
    set_status(vim.tbl_extend('force', stopped_status(), { message = err }))
    return nil
  end
  M._stopping = false
  local id
  if has_011 then
    id = vim.lsp.start(cfg, { attach = false, reuse_client = cfg.reuse_client, silent = true })
  else
    id = vim.lsp.start_client(cfg)
  end
  if not id then
    M.notify('could not start `' .. table.concat(cfg.cmd, ' ') .. '`; see :checkhealth threadsync', vim.log.levels.ERROR)
    return nil
  end
  M._client_id = id
  if M._status.state == 'stopped' then
    set_status({ state = 'starting', pending = 0, conflicts = 0, online = false })
  end
  return id
end

---Stops the client (if any) and waits up to `timeout_ms` for it to exit.
---@param timeout_ms? integer
function M.stop(timeout_ms)
  local clients = vim.lsp.get_clients({ name = NAME, _uninitialized = true })
  local own = M._client_id and vim.lsp.get_client_by_id(M._client_id)
  if own and not vim.tbl_contains(clients, own) then
    table.insert(clients, own)
  end
  if #clients == 0 then
    return
  end
  M._stopping = true
  for _, c in ipairs(clients) do
    client_stop(c)
  end
  -- Gone = the process exited and Neovim dropped the client.
  local done = vim.wait(timeout_ms or 3000, function()
    for _, c in ipairs(clients) do
      if vim.lsp.get_client_by_id(c.id) ~= nil then
        return false
      end
    end
    return true
  end, 20)
  if not done then
    for _, c in ipairs(clients) do
      client_stop(c, true)
    end
  end
  M._client_id = nil
  set_status(stopped_status())
end

---Stops the client and starts a new one.
---@return integer? client_id
function M.restart()
  M.stop()
  return M.start()
end

---Sends a request to the running client.
---@param method string
---@param params table?
---@param cb fun(err: table?, result: any)
function M.request(method, params, cb)
  local client = M.get_client()
  if not client then
    cb({ code = -32001, message = 'the threadsync client is not running (try :ThreadSync restart)' }, nil)
    return
  end
  if not client.initialized then
    -- Requests wait for `initialized` (the sidecar's engine starts there).
    vim.wait(10000, function()
      return client.initialized or client_is_stopped(client)
    end, 20)
  end
  local ok = client_request(client, method, params or vim.empty_dict(), function(err, result)
    cb(err, result)
  end)
  if not ok then
    cb({ code = -32001, message = 'could not send the request to the sidecar' }, nil)
  end
end

---Runs a `workspace/executeCommand` command.
---@param command string
---@param arguments table
---@param cb fun(err: table?, result: any)
function M.execute(command, arguments, cb)
  M.request('workspace/executeCommand', { command = command, arguments = arguments }, cb)
end

-- ---------------------------------------------------------------------------
-- setup
-- ---------------------------------------------------------------------------

---Configures the plugin and (unless `autostart = false`) starts the single
---sidecar client. Raises an error naming the option when an option is wrong.
---@param opts? threadsync.Opts
function M.setup(opts)
  M.opts = config.resolve(opts)
  M._setup_called = true
  if has_011 and vim.lsp.config then
    -- Keep `vim.lsp.enable('threadsync')` on the same options.
    local cfg = M.lsp_config()
    pcall(vim.lsp.config, NAME, cfg)
  end
  if M.opts.autostart then
    local running = M.get_client()
    if running then
      -- Called again with other options: restart on them.
      local cfg = M.lsp_config()
      local same = vim.deep_equal(running.config.cmd, cfg.cmd)
        and vim.deep_equal(running.config.init_options or {}, cfg.init_options or {})
        and vim.deep_equal(running.config.cmd_env or {}, cfg.cmd_env or {})
      if not same then
        M.restart()
      end
    else
      M.start()
    end
  end
end

---Changes `server` and/or `token` of the running sidecar at once, without a
---restart (workspace/didChangeConfiguration).
---@param opts { server?: string, token?: string|fun():string? }
function M.configure(opts)
  local merged = vim.tbl_extend('force', {}, M.opts, opts or {})
  config.validate({ server = merged.server, token = merged.token })
  M.opts = merged
  local client = M.get_client()
  if not client then
    return
  end
  local init = M.init_options(M.opts)
  local settings = { server = init.server, token = init.token }
  if has_011 then
    client:notify('workspace/didChangeConfiguration', { settings = settings })
  else
    client.notify('workspace/didChangeConfiguration', { settings = settings })
  end
end

return M
