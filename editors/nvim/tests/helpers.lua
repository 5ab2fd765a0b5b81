-- Test helpers: real `threadsync serve` / `threadsync lsp` processes, bounded
-- waits, per-case PASS/FAIL lines (tallied by run.sh), cleanup at the end.
local H = {}

local uv = vim.uv
H.has_011 = vim.fn.has('nvim-0.11') == 1

local this = debug.getinfo(1, 'S').source:sub(2)
H.tests_dir = vim.fs.dirname(vim.fn.fnamemodify(this, ':p'))
H.plugin_root = vim.fs.dirname(H.tests_dir)
H.repo_root = vim.fs.dirname(vim.fs.dirname(H.plugin_root))
H.bin = os.getenv('THREADSYNC_BIN') or vim.fs.joinpath(H.repo_root, 'target', 'debug', 'threadsync')

H.tmp = vim.fn.tempname() .. '-tstest'
vim.fn.mkdir(H.tmp, 'p')

H.passed, H.failed, H.skipped = 0, 0, 0
H.procs = {} ---@type vim.SystemObj[]
H.peers = {} ---@type table[]

local function out(line)
  io.stdout:write(line .. '\n')
  io.stdout:flush()
end
H.out = out

-- ---------------------------------------------------------------------------
-- assertions and waits
-- ---------------------------------------------------------------------------

function H.eq(expected, actual, what)
  if not vim.deep_equal(expected, actual) then
    error(('%s: expected %s, got %s'):format(what or 'value', vim.inspect(expected), vim.inspect(actual)), 2)
  end
end

function H.ok(cond, what)
  if not cond then
    error(what or 'assertion failed', 2)
  end
  return cond
end

function H.contains(haystack, needle, what)
  if type(haystack) ~= 'string' or not haystack:find(needle, 1, true) then
    error(('%s: %s does not contain %s'):format(what or 'text', vim.inspect(haystack), vim.inspect(needle)), 2)
  end
end

---Waits until pred() is truthy; fails naming what was awaited and, when
---given, the last value of describe().
function H.wait(what, timeout_ms, pred, describe)
  local ok = vim.wait(timeout_ms, function()
    local good, v = pcall(pred)
    return good and v
  end, 20)
  if not ok then
    error(('timed out after %d ms waiting for %s%s'):format(
      timeout_ms,
      what,
      describe and ('; last: ' .. vim.inspect(describe())) or ''
    ), 2)
  end
end

---Waits until an element of `list` (which handlers keep appending to)
---satisfies `pred`; returns that element.
function H.wait_item(what, timeout_ms, list, pred)
  local found
  H.wait(what, timeout_ms, function()
    for _, item in ipairs(list) do
      if pred(item) then
        found = item
        return true
      end
    end
  end, function()
    return list
  end)
  return found
end

-- ---------------------------------------------------------------------------
-- processes
-- ---------------------------------------------------------------------------

function H.mkdir(name)
  local d = vim.fs.joinpath(H.tmp, name)
  vim.fn.mkdir(d, 'p')
  return d
end

function H.free_port()
  local tcp = uv.new_tcp()
  tcp:bind('127.0.0.1', 0)
  local port = tcp:getsockname().port
  tcp:close()
  return port
end

---HTTP GET with curl; returns status code (0 when unreachable) and body.
function H.http_get(url, headers)
  local cmd = { 'curl', '-sS', '--max-time', '3', '-o', '-', '-w', '\n%{http_code}', url }
  for k, v in pairs(headers or {}) do
    table.insert(cmd, '-H')
    table.insert(cmd, k .. ': ' .. v)
  end
  local r = vim.system(cmd, { text = true }):wait(5000)
  local body, code = (r.stdout or ''):match('^(.*)\n(%d+)$')
  return tonumber(code) or 0, body
end

local Server = {}
Server.__index = Server

---A `threadsync serve` on a free loopback port with its own SQLite db.
function H.server()
  local dir = H.mkdir('server-' .. H.free_port())
  local s = setmetatable({
    port = H.free_port(),
    db = 'sqlite://' .. vim.fs.joinpath(dir, 'db.sqlite'),
    log = vim.fs.joinpath(dir, 'serve.log'),
  }, Server)
  s.url = 'http://127.0.0.1:' .. s.port
  local r = vim.system({ H.bin, 'token', 'create', '--team', 't1', '--db', s.db }, { text = true }):wait(20000)
  if r.code ~= 0 then
    error('token create failed: ' .. tostring(r.stderr))
  end
  s.token = vim.trim(r.stdout)
  s:start()
  return s
end

function Server:start()
  local logf = assert(io.open(self.log, 'a'))
  local exited = false
  self.proc = vim.system({ H.bin, 'serve', '--listen', '127.0.0.1:' .. self.port, '--db', self.db }, {
    stdout = false,
    stderr = function(_, data)
      if data then
        logf:write(data)
        logf:flush()
      end
    end,
  }, function()
    exited = true
  end)
  self.exited = function()
    return exited
  end
  table.insert(H.procs, self.proc)
  H.wait('server /healthz on ' .. self.url, 15000, function()
    if exited then
      error('threadsync serve exited; see ' .. self.log)
    end
    return H.http_get(self.url .. '/healthz') == 200
  end)
end

---kill -9: the server vanishes as in a crash.
function Server:kill()
  if self.proc and not self.exited() then
    self.proc:kill(9)
    H.wait('server exit', 5000, self.exited)
  end
end

---The thread as the server has it (nil when absent).
function Server:thread(id)
  local code, body = H.http_get(self.url .. '/v1/threads/' .. id, { Authorization = 'Bearer ' .. self.token })
  if code ~= 200 then
    return nil
  end
  return vim.json.decode(body)
end

-- ---------------------------------------------------------------------------
-- the plugin and independent peers
-- ---------------------------------------------------------------------------

---Options for require('threadsync').setup() against `server`, with fresh dirs.
function H.opts(server, extra)
  local base = H.mkdir('editor-' .. H.free_port())
  return vim.tbl_extend('force', {
    path = H.bin,
    server = server and server.url or 'http://127.0.0.1:9',
    token = server and server.token or nil,
    threads_dir = vim.fs.joinpath(base, 'threads'),
    state_dir = vim.fs.joinpath(base, 'state'),
    poll = 'longpoll',
    log_file = vim.fs.joinpath(base, 'sidecar.log'),
  }, extra or {})
end

---Async request → result (errors raise).
function H.request(client, method, params, timeout_ms)
  local done, err, result = false, nil, nil
  local cb = function(e, r)
    done, err, result = true, e, r
  end
  if H.has_011 then
    client:request(method, params or vim.empty_dict(), cb)
  else
    client.request(method, params or vim.empty_dict(), cb)
  end
  H.wait(method .. ' answer', timeout_ms or 10000, function()
    return done
  end)
  if err then
    error(method .. ' failed: ' .. vim.inspect(err), 2)
  end
  return result
end

---Request through the plugin's own client.
function H.ts_request(method, params, timeout_ms)
  local client = assert(require('threadsync').get_client(), 'no threadsync client')
  H.wait('client initialized', 10000, function()
    return client.initialized
  end)
  return H.request(client, method, params, timeout_ms)
end

---A second, independent sidecar (another machine, as far as the server can
---tell): its own LSP client, threadsDir and stateDir.
function H.peer(server, name)
  local base = H.mkdir('peer-' .. name)
  local peer = { status = nil, threads_dir = vim.fs.joinpath(base, 'threads') }
  local cfg = {
    name = 'peer-' .. name,
    cmd = { H.bin, 'lsp' },
    cmd_env = { THREADSYNC_LOG_FILE = vim.fs.joinpath(base, 'sidecar.log'), THREADSYNC_LOG = 'info' },
    root_dir = base,
    init_options = {
      server = server.url,
      token = server.token,
      threadsDir = peer.threads_dir,
      stateDir = vim.fs.joinpath(base, 'state'),
      poll = 'longpoll',
    },
    handlers = {
      ['threadsync/status'] = function(_, p)
        peer.status = p
      end,
    },
  }
  local id
  if H.has_011 then
    id = vim.lsp.start(cfg, { attach = false })
  else
    id = vim.lsp.start_client(cfg)
  end
  peer.client = assert(vim.lsp.get_client_by_id(id), 'peer client did not start')
  table.insert(H.peers, peer.client)
  H.wait('peer initialized', 10000, function()
    return peer.client.initialized
  end)
  function peer.request(method, params, timeout_ms)
    return H.request(peer.client, method, params, timeout_ms)
  end
  ---forceSync answers once the changes made so far are on the server (a
  ---status read right after a change may still be the previous one).
  function peer.wait_synced(timeout_ms)
    peer.request('workspace/executeCommand', { command = 'threadsync.forceSync', arguments = {} }, timeout_ms)
    H.wait('peer synced', timeout_ms or 10000, function()
      local s = peer.request('threadsync/getStatus', {})
      return s.state == 'synced' and s.pending == 0
    end, function()
      return peer.status
    end)
  end
  return peer
end

---Captures vim.notify calls: returns the list (each {msg, level}).
function H.capture_notify()
  local list = {}
  vim.notify = function(msg, level)
    table.insert(list, { msg = msg, level = level })
  end
  return list
end

---Captures User autocmd data for `pattern`.
function H.capture_event(pattern)
  local list = {}
  vim.api.nvim_create_autocmd('User', {
    pattern = pattern,
    callback = function(ev)
      table.insert(list, ev.data)
    end,
  })
  return list
end

---Replaces vim.ui.select: each call is recorded (items and how they are
---shown) and answered by `choose(items, formatted, opts)` (an index or nil).
function H.stub_select(choose)
  local calls = {}
  vim.ui.select = function(items, opts, on_choice)
    local formatted = {}
    for i, item in ipairs(items) do
      formatted[i] = opts.format_item and opts.format_item(item) or tostring(item)
    end
    table.insert(calls, { items = items, formatted = formatted, prompt = opts.prompt })
    local idx = choose(items, formatted, opts, #calls)
    vim.schedule(function()
      on_choice(idx and items[idx] or nil, idx)
    end)
  end
  return calls
end

function H.statusline()
  return require('threadsync').statusline()
end

function H.wait_statusline(expected, timeout_ms)
  H.wait('statusline ' .. vim.inspect(expected), timeout_ms or 10000, function()
    return H.statusline() == expected
  end, function()
    return { statusline = H.statusline(), status = require('threadsync').status() }
  end)
end

-- ---------------------------------------------------------------------------
-- running cases
-- ---------------------------------------------------------------------------

---Runs one case; a failure is reported and the next case still runs.
function H.case(name, fn)
  local t0 = uv.hrtime()
  local ok, err = xpcall(fn, debug.traceback)
  local ms = math.floor((uv.hrtime() - t0) / 1e6)
  if ok then
    H.passed = H.passed + 1
    out(('PASS: %s (%d ms)'):format(name, ms))
  else
    H.failed = H.failed + 1
    out(('FAIL: %s (%d ms)'):format(name, ms))
    for _, l in ipairs(vim.split(tostring(err), '\n')) do
      out('    ' .. l)
    end
  end
end

function H.skip(name, why)
  H.skipped = H.skipped + 1
  out(('SKIP: %s: %s'):format(name, why))
end

---Stops every client and child process, removes the temp dir, exits with
---the result. Always call at the end of a spec (also reached after failures
---because H.case never raises).
function H.finish()
  pcall(function()
    for _, c in ipairs(vim.lsp.get_clients({ _uninitialized = true })) do
      if H.has_011 then
        c:stop(true)
      else
        c.stop(true)
      end
    end
    vim.wait(2000, function()
      return #vim.lsp.get_clients({ _uninitialized = true }) == 0
    end, 20)
  end)
  for _, p in ipairs(H.procs) do
    pcall(function()
      p:kill(9)
    end)
  end
  for _, p in ipairs(H.procs) do
    pcall(function()
      p:wait(3000)
    end)
  end
  if os.getenv('TS_KEEP_TMP') then
    out('kept ' .. H.tmp)
  else
    vim.fn.delete(H.tmp, 'rf')
  end
  out(('RESULT: %d passed, %d failed, %d skipped'):format(H.passed, H.failed, H.skipped))
  os.exit(H.failed == 0 and 0 or 1)
end

---Runs a spec body; an error outside H.case counts as a failed case, and the
---cleanup always runs.
function H.main(fn)
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then
    H.failed = H.failed + 1
    out('FAIL: spec aborted')
    for _, l in ipairs(vim.split(tostring(err), '\n')) do
      out('    ' .. l)
    end
  end
  H.finish()
end

---A thread file as a reader sees it: `<id>.json`, or the log `<id>.jsonl`
---replayed the documented way (protocol.md, "Thread logs"); nil if neither.
function H.read_thread(dir, id)
  local f = io.open(vim.fs.joinpath(dir, id .. '.json'))
  if f then
    local ok, t = pcall(vim.json.decode, f:read('*a'))
    f:close()
    return ok and t or nil
  end
  f = io.open(vim.fs.joinpath(dir, id .. '.jsonl'))
  if not f then
    return nil
  end
  local t, order, by_id, deleted = { messages = {} }, {}, {}, {}
  for line in f:lines() do
    local ok, r = pcall(vim.json.decode, line)
    if ok and type(r) == 'table' then
      if r.type == 'thread' then
        t.id, t.title, t.created, t.env = r.id, r.title, r.created, r.env
      elseif r.type == 'title' then
        t.title = r.title
      elseif r.type == 'edit' and by_id[r.id] then
        by_id[r.id].content = r.content
      elseif r.type == 'delete' and by_id[r.id] then
        deleted[r.id] = true
      elseif r.type == 'message' then
        if by_id[r.id] and not deleted[r.id] then
          by_id[r.id].content = r.content
        else
          deleted[r.id] = nil
          for i, x in ipairs(order) do
            if x == r.id then
              table.remove(order, i)
              break
            end
          end
          local at = #order + 1
          if r.after == vim.NIL then
            at = 1
          elseif r.after ~= nil then
            for i = #order, 1, -1 do
              if order[i] == r.after then
                at = i + 1
                break
              end
            end
          end
          table.insert(order, at, r.id)
          by_id[r.id] = { id = r.id, role = r.role, content = r.content }
        end
      end
    end
  end
  f:close()
  for _, mid in ipairs(order) do
    if not deleted[mid] then
      table.insert(t.messages, by_id[mid])
    end
  end
  return t
end

---Loads the plugin the way a plugin manager does (-u NONE skips plugin/).
function H.load_plugin()
  vim.cmd('runtime plugin/threadsync.lua')
end

return H
