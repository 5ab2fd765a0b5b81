-- :checkhealth threadsync, as the user reads it.
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

local function checkhealth()
  vim.cmd('checkhealth threadsync')
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  local text = table.concat(lines, '\n')
  vim.cmd('bwipeout!')
  return text, lines
end

local function line_with(lines, ...)
  local needles = { ... }
  for _, l in ipairs(lines) do
    local all = true
    for _, n in ipairs(needles) do
      if not l:find(n, 1, true) then
        all = false
      end
    end
    if all then
      return l
    end
  end
end

H.main(function()
  H.load_plugin()
  local server = H.server()
  local ts = require('threadsync')

  H.case('wrong binary path → ERROR with advice', function()
    local notes = H.capture_notify()
    ts.setup(H.opts(server, { path = '/nonexistent/threadsync' }))
    H.ok(notes[1] and notes[1].msg:find('binary not found', 1, true), 'setup() notifies: ' .. vim.inspect(notes))
    H.eq(vim.log.levels.ERROR, notes[1].level, 'notify level')
    H.eq('TS stopped', H.statusline(), 'statusline')
    local text, lines = checkhealth()
    H.ok(line_with(lines, 'ERROR', 'binary not found', '/nonexistent/threadsync'), 'ERROR line; got:\n' .. text)
    H.contains(text, 'ADVICE', 'health')
    H.contains(text, 'cargo install', 'health advice')
    H.contains(text, "setup({ path = ", 'health advice')
    H.ok(line_with(lines, 'WARN', 'not running'), 'client not running WARN; got:\n' .. text)
  end)

  H.case('good config → OK for binary, version, config, threads dir, server, client', function()
    local opts = H.opts(server)
    vim.fn.mkdir(opts.threads_dir, 'p')
    ts.setup(opts)
    H.wait_statusline('TS ✓')
    local text, lines = checkhealth()
    H.ok(line_with(lines, 'OK', 'binary: ' .. H.bin), 'binary OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', '--version', 'threadsync 0.'), 'version OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', 'options are valid'), 'config OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', 'token: set'), 'token OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', 'exists and is writable'), 'threads dir OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', 'server reachable', server.url .. '/healthz'), 'server OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', 'client running'), 'client OK; got:\n' .. text)
    H.ok(line_with(lines, 'OK', 'status: synced'), 'status OK; got:\n' .. text)
    H.ok(not text:find('ERROR', 1, true), 'no ERROR expected; got:\n' .. text)
    H.ok(not text:find(server.token, 1, true), 'the token must never be shown')
  end)

  H.case('server down → ERROR "server not reachable" with advice; client WARN offline', function()
    server:kill()
    H.wait('offline', 10000, function()
      return ts.status().state == 'offline'
    end)
    local text, lines = checkhealth()
    H.ok(line_with(lines, 'ERROR', 'server not reachable'), 'server ERROR; got:\n' .. text)
    H.contains(text, 'threadsync serve', 'advice')
    H.ok(line_with(lines, 'WARN', 'status: offline'), 'status WARN; got:\n' .. text)
  end)

  H.case('server check works without curl (plain TCP)', function()
    server:start()
    local health = require('threadsync.health')
    local saved = vim.fn.executable
    vim.fn.executable = function(x)
      if x == 'curl' then
        return 0
      end
      return saved(x)
    end
    local ok, code = pcall(health.http_status, server.url .. '/healthz', 3000)
    local down_code, down_err = health.http_status('http://127.0.0.1:9/healthz', 3000)
    vim.fn.executable = saved
    H.ok(ok, tostring(code))
    H.eq(200, code, 'status via TCP')
    H.eq(nil, down_code, 'dead port')
    H.contains(down_err, 'cannot connect', 'dead port error')
  end)
end)
