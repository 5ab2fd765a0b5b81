-- Options of the threadsync plugin: defaults, validation, and where the
-- sidecar's own settings (env, config file, defaults) come from.
local M = {}

---Symbols used by the statusline, one per state.
---@class threadsync.Icons
---@field prefix? string        Shown before every state (default "TS")
---@field synced? string        Everything is on the server (default "✓")
---@field syncing? string       A push or pull is running (default "⟳")
---@field pending? string       Changes not yet on the server, followed by their count (default "↑")
---@field offline? string       Server unreachable (default "offline"); "↑N" follows when changes wait
---@field conflict? string      Conflicts to resolve (default "⚠"), followed by "N conflict(s)"
---@field unauthorized? string  The server refused the token (default "unauthorized")
---@field error? string         Sync error (default "error")
---@field starting? string      Client started, no status yet (default "…")
---@field stopped? string       No client running (default "stopped")

---@class threadsync.StatuslineOpts
---@field format? fun(status: threadsync.Status, icons: threadsync.Icons): string  Replaces the built-in text entirely

---@class threadsync.Opts
---@field server? string                 Sync server URL; nil: the sidecar's default ($THREADSYNC_SERVER, config file, http://127.0.0.1:7420)
---@field token? string|fun():string?   Bearer token, or a function returning it; nil: $THREADSYNC_TOKEN / the sidecar's config file
---@field threads_dir? string            Thread files directory (threadsDir); nil: the sidecar's default
---@field state_dir? string              Sidecar state directory (stateDir); nil: the sidecar's default
---@field poll? string                   "longpoll" | "adaptive" | "fixed:<seconds>"; nil: the sidecar's default (longpoll)
---@field path? string                   Path to the threadsync binary (default: `threadsync` on $PATH)
---@field cmd? string[]                  Full command that starts the sidecar (overrides `path`), e.g. { "threadsync", "lsp" }
---@field autostart? boolean             Start the client in setup() (default true)
---@field log_file? string|false         Sidecar log file (THREADSYNC_LOG_FILE); false: no log file
---@field log_level? string              THREADSYNC_LOG for the sidecar: "error"|"warn"|"info"|"debug"|"trace" (default "info")
---@field env? table<string,string>      Extra environment for the sidecar process
---@field icons? threadsync.Icons        Statusline symbols
---@field statusline? threadsync.StatuslineOpts
---@field notify_rollback? boolean       vim.notify when the server refuses a change (default true)

---@type threadsync.Opts
M.defaults = {
  server = nil,
  token = nil,
  threads_dir = nil,
  state_dir = nil,
  poll = nil,
  path = nil,
  cmd = nil,
  autostart = true,
  log_file = nil, -- nil: stdpath('log')/threadsync.log
  log_level = 'info',
  env = {},
  icons = {
    prefix = 'TS',
    synced = '✓',
    syncing = '⟳',
    pending = '↑',
    offline = 'offline',
    conflict = '⚠',
    unauthorized = 'unauthorized',
    error = 'error',
    starting = '…',
    stopped = 'stopped',
  },
  statusline = { format = nil },
  notify_rollback = true,
}

-- camelCase spellings of the sidecar's keys are accepted too.
local aliases = { threadsDir = 'threads_dir', stateDir = 'state_dir' }

local has_011 = vim.fn.has('nvim-0.11') == 1

---Validates one value; the error names the option.
local function check(name, value, validator, optional, expected)
  local full = 'threadsync.setup: option `' .. name .. '`'
  if has_011 then
    vim.validate(full, value, validator, optional, expected)
  else
    if type(validator) == 'function' then
      vim.validate({ [full] = { value, validator, expected } })
    else
      vim.validate({ [full] = { value, validator, optional } })
    end
  end
end

local function is_poll(v)
  if v == nil then
    return true
  end
  if type(v) ~= 'string' then
    return false
  end
  if v == 'longpoll' or v == 'adaptive' then
    return true
  end
  local secs = v:match('^fixed:(%d+)$')
  return secs ~= nil and tonumber(secs) > 0
end

local known = {
  server = true, token = true, threads_dir = true, state_dir = true, poll = true, path = true, cmd = true,
  autostart = true, log_file = true, log_level = true, env = true, icons = true, statusline = true,
  notify_rollback = true,
}

local log_levels = { error = true, warn = true, info = true, debug = true, trace = true }

---Checks user options, raising an error that names the bad option.
---@param opts table
function M.validate(opts)
  if type(opts) ~= 'table' then
    error('threadsync.setup: expected a table of options, got ' .. type(opts), 0)
  end
  for k in pairs(opts) do
    if not known[k] and not aliases[k] then
      error(('threadsync.setup: unknown option `%s`'):format(tostring(k)), 0)
    end
  end
  check('server', opts.server, function(v)
    return v == nil or (type(v) == 'string' and v:match('^https?://') ~= nil)
  end, true, 'an http:// or https:// URL string')
  check('token', opts.token, { 'string', 'function' }, true)
  check('threads_dir', opts.threads_dir, 'string', true)
  check('state_dir', opts.state_dir, 'string', true)
  check('poll', opts.poll, is_poll, true, '"longpoll", "adaptive" or "fixed:<seconds>"')
  check('path', opts.path, 'string', true)
  check('cmd', opts.cmd, function(v)
    return v == nil or (type(v) == 'table' and #v > 0 and type(v[1]) == 'string')
  end, true, 'a non-empty list of strings, e.g. { "threadsync", "lsp" }')
  check('autostart', opts.autostart, 'boolean', true)
  check('log_file', opts.log_file, function(v)
    return v == nil or v == false or type(v) == 'string'
  end, true, 'a file path or false')
  check('log_level', opts.log_level, function(v)
    return v == nil or log_levels[v] == true
  end, true, '"error", "warn", "info", "debug" or "trace"')
  check('env', opts.env, 'table', true)
  check('icons', opts.icons, 'table', true)
  if type(opts.icons) == 'table' then
    for k, v in pairs(opts.icons) do
      if M.defaults.icons[k] == nil then
        error(('threadsync.setup: unknown option `icons.%s`'):format(tostring(k)), 0)
      end
      check('icons.' .. k, v, 'string')
    end
  end
  check('statusline', opts.statusline, 'table', true)
  if type(opts.statusline) == 'table' then
    check('statusline.format', opts.statusline.format, 'function', true)
  end
  check('notify_rollback', opts.notify_rollback, 'boolean', true)
end

---Validates and merges user options over the defaults.
---@param opts? threadsync.Opts
---@return threadsync.Opts
function M.resolve(opts)
  opts = vim.deepcopy(opts or {})
  for camel, snake in pairs(aliases) do
    if opts[camel] ~= nil and opts[snake] == nil then
      opts[snake] = opts[camel]
    end
    opts[camel] = nil
  end
  M.validate(opts)
  return vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts)
end

local function read_config_file()
  local base = vim.env.XDG_CONFIG_HOME
  if not base or base == '' then
    base = vim.fs.joinpath(vim.env.HOME or '', '.config')
  end
  local path = vim.fs.joinpath(base, 'threadsync', 'config.json')
  local f = io.open(path, 'r')
  if not f then
    return {}
  end
  local text = f:read('*a')
  f:close()
  local ok, decoded = pcall(vim.json.decode, text)
  return (ok and type(decoded) == 'table') and decoded or {}
end

local function env(name)
  local v = vim.env[name]
  if v == nil or v == '' then
    return nil
  end
  return v
end

---The value the sidecar will use for a key: option, env, config file, default
---(the precedence of protocol.md "Configuration").
---@param opts threadsync.Opts
---@param key 'server'|'threadsDir'|'stateDir'
---@return string value, string source
function M.effective(opts, key)
  local opt_key = ({ server = 'server', threadsDir = 'threads_dir', stateDir = 'state_dir' })[key]
  local env_key = ({ server = 'THREADSYNC_SERVER', threadsDir = 'THREADSYNC_THREADS_DIR', stateDir = 'THREADSYNC_STATE_DIR' })[key]
  if opts[opt_key] then
    return key == 'server' and opts[opt_key] or vim.fs.normalize(opts[opt_key]), 'setup()'
  end
  local merged_env = (opts.env or {})[env_key] or env(env_key)
  if merged_env then
    return merged_env, '$' .. env_key
  end
  local file = read_config_file()
  if type(file[key]) == 'string' then
    return file[key], 'config.json'
  end
  if key == 'server' then
    return 'http://127.0.0.1:7420', 'default'
  end
  local xdg = key == 'threadsDir' and 'XDG_DATA_HOME' or 'XDG_STATE_HOME'
  local base = env(xdg)
    or vim.fs.joinpath(vim.env.HOME or '', key == 'threadsDir' and '.local/share' or '.local/state')
  if key == 'threadsDir' then
    return vim.fs.joinpath(base, 'threadsync', 'threads'), 'default'
  end
  return vim.fs.joinpath(base, 'threadsync'), 'default'
end

---Where the token comes from, without revealing it.
---@param opts threadsync.Opts
---@return string? source
function M.token_source(opts)
  if type(opts.token) == 'function' then
    return 'setup() token function'
  elseif type(opts.token) == 'string' and opts.token ~= '' then
    return 'setup() token'
  elseif (opts.env or {}).THREADSYNC_TOKEN or env('THREADSYNC_TOKEN') then
    return '$THREADSYNC_TOKEN'
  elseif type(read_config_file().token) == 'string' then
    return 'config.json'
  end
  return nil
end

return M
