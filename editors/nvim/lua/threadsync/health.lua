-- :checkhealth threadsync
local M = {}

local health = vim.health

---GET url with curl, or over a plain TCP socket when curl is missing.
---@param url string
---@param timeout_ms integer
---@return integer? status, string? err
function M.http_status(url, timeout_ms)
  if vim.fn.executable('curl') == 1 then
    local ok, res = pcall(function()
      return vim
        .system({
          'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}',
          '--max-time', tostring(math.ceil(timeout_ms / 1000)), url,
        }, { text = true })
        :wait(timeout_ms + 1000)
    end)
    if not ok then
      return nil, tostring(res)
    end
    local code = tonumber(vim.trim(res.stdout or ''))
    if res.code == 0 and code and code > 0 then
      return code
    end
    return nil, vim.trim(res.stderr ~= '' and res.stderr or ('curl exited with ' .. tostring(res.code)))
  end
  local host, port, path = url:match('^http://([^/:]+):?(%d*)(.*)$')
  if not host then
    return nil, 'curl is not installed, and only http:// URLs can be checked without it'
  end
  port = tonumber(port) or 80
  path = path ~= '' and path or '/'
  local addr = host
  if host == 'localhost' then
    addr = '127.0.0.1'
  elseif not host:match('^[%d.]+$') and not host:find(':') then
    local infos = vim.uv.getaddrinfo(host, nil, { socktype = 'stream' })
    if not infos or not infos[1] then
      return nil, 'cannot resolve ' .. host
    end
    addr = infos[1].addr
  end
  local tcp = vim.uv.new_tcp()
  local response, failure, done = '', nil, false
  tcp:connect(addr, port, function(err)
    if err then
      failure, done = 'cannot connect to ' .. host .. ':' .. port .. ': ' .. err, true
      return
    end
    tcp:write(('GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n'):format(path, host))
    tcp:read_start(function(rerr, chunk)
      if rerr then
        failure, done = rerr, true
      elseif chunk then
        response = response .. chunk
      else
        done = true
      end
    end)
  end)
  vim.wait(timeout_ms, function()
    return done or response:match('^HTTP/%d%.%d %d+') ~= nil and response:find('\r\n\r\n') ~= nil
  end, 20)
  if not tcp:is_closing() then
    tcp:close()
  end
  local code = tonumber(response:match('^HTTP/%d%.%d (%d+)'))
  if code then
    return code
  end
  return nil, failure or 'no answer within ' .. timeout_ms .. ' ms'
end

local function check_binary(ts)
  health.start('threadsync: binary')
  local cmd, err = ts.resolve_cmd()
  if not cmd then
    health.error(err, {
      'Install the binary: `cargo install --path .` in the threadsync checkout (puts `threadsync` on $PATH)',
      "Or point the plugin at it: require('threadsync').setup({ path = '/path/to/threadsync' })",
    })
    return false
  end
  health.ok('binary: ' .. cmd[1])
  local ok, res = pcall(function()
    return vim.system({ cmd[1], '--version' }, { text = true }):wait(5000)
  end)
  if ok and res.code == 0 then
    health.ok('`threadsync --version`: ' .. vim.trim(res.stdout or ''))
  else
    health.error('`' .. cmd[1] .. ' --version` failed: ' .. vim.trim(ok and (res.stderr or '') or tostring(res)), {
      'Rebuild or reinstall threadsync; the binary does not run',
    })
  end
  return true
end

local function check_config(ts, config)
  health.start('threadsync: configuration')
  local ok, err = pcall(config.validate, vim.deepcopy(ts.opts))
  if ok then
    health.ok(ts._setup_called and 'setup() options are valid' or 'setup() not called yet: using the defaults')
  else
    health.error('invalid options: ' .. tostring(err), { 'Fix the named option in require("threadsync").setup({...})' })
  end
  local server, src = config.effective(ts.opts, 'server')
  health.info(('server: %s (from %s)'):format(server, src))
  local tsrc = config.token_source(ts.opts)
  if tsrc then
    health.ok('token: set (from ' .. tsrc .. ')')
  else
    health.warn('no token: the server will answer 401 (state "unauthorized")', {
      'Create one: `threadsync token create --team TEAM`',
      "Then set it: require('threadsync').setup({ token = … }) or export THREADSYNC_TOKEN",
    })
  end
  local dir, dsrc = config.effective(ts.opts, 'threadsDir')
  local stat = vim.uv.fs_stat(dir)
  if not stat then
    local parent = dir
    repeat
      parent = vim.fs.dirname(parent)
    until vim.uv.fs_stat(parent) or parent == '/' or parent == '.'
    if vim.uv.fs_access(parent, 'W') then
      health.warn(('threads directory %s (from %s) does not exist yet'):format(dir, dsrc), {
        'The sidecar creates it on start; or create it: mkdir -p ' .. dir,
      })
    else
      health.error(('threads directory %s (from %s) does not exist and cannot be created'):format(dir, dsrc), {
        'Set threads_dir in setup() to a directory you can write',
      })
    end
  elseif stat.type ~= 'directory' then
    health.error(('threads directory %s is not a directory'):format(dir), { 'Set threads_dir in setup()' })
  elseif not vim.uv.fs_access(dir, 'W') then
    health.error(('threads directory %s is not writable'):format(dir), { 'Fix its permissions or set threads_dir' })
  else
    health.ok(('threads directory %s (from %s) exists and is writable'):format(dir, dsrc))
  end
  local log = ts.log_file()
  health.info('sidecar log: ' .. (log or 'off (log_file = false)'))
  return server
end

local function check_server(server)
  health.start('threadsync: server')
  local url = server:gsub('/+$', '') .. '/healthz'
  local code, err = M.http_status(url, 3000)
  if code == 200 then
    health.ok('server reachable: GET ' .. url .. ' → 200')
  elseif code then
    health.error(('GET %s answered %d'):format(url, code), {
      'Is this a threadsync server? Check the `server` option',
    })
  else
    health.error(('server not reachable: GET %s: %s'):format(url, err or '?'), {
      'Start it: `threadsync serve --listen 127.0.0.1:7420`',
      "Or point the plugin at the right one: require('threadsync').setup({ server = 'http://host:port' })",
    })
  end
end

local function check_client(ts)
  health.start('threadsync: client')
  local client = ts.get_client()
  local clients = vim.lsp.get_clients({ name = 'threadsync', _uninitialized = true })
  if not client then
    health.warn('the client is not running', {
      "Call require('threadsync').setup() (autostart) or run :ThreadSync restart",
      'See the sidecar log: :ThreadSync log',
    })
    return
  end
  health.ok(('client running (id %d, `%s`); %d threadsync client(s) in total'):format(
    client.id,
    table.concat(client.config.cmd or {}, ' '),
    #clients
  ))
  local s = ts.status()
  local line = ('status: %s, pending %d, conflicts %d, %s, last sync %s%s'):format(
    s.state,
    s.pending or 0,
    s.conflicts or 0,
    s.online and 'online' or 'offline',
    s.lastSync or 'never',
    s.message and (' — ' .. s.message) or ''
  )
  local advice = ({
    offline = { 'The server is unreachable; changes wait and go out when it is back. See the server check above' },
    unauthorized = { 'The server refused the token: create a new one with `threadsync token create --team TEAM`' },
    error = { 'See :ThreadSync log for the reason' },
    conflict = { 'Resolve with :ThreadSync resolve' },
  })[s.state]
  if advice then
    health.warn(line, advice)
  else
    health.ok(line)
  end
end

function M.check()
  local ts = require('threadsync')
  local config = require('threadsync.config')
  check_binary(ts)
  local server = check_config(ts, config)
  check_server(server)
  check_client(ts)
end

return M
