-- Statusline through synced → offline with a pending change → synced, and
-- :ThreadSync sync with the server up and down.
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

H.main(function()
  H.load_plugin()
  local server = H.server()
  local events = H.capture_event('ThreadSyncStatus')
  local ts = require('threadsync')
  local opts = H.opts(server)
  local thread_id

  H.case('setup() with no file open starts one client; statusline synced', function()
    H.eq(1, #vim.api.nvim_list_bufs(), 'buffers before setup')
    H.eq('TS stopped', H.statusline(), 'statusline before setup')
    ts.setup(opts)
    H.eq(1, #vim.lsp.get_clients({ name = 'threadsync', _uninitialized = true }), 'clients after setup')
    H.wait_statusline('TS ✓')
    -- The statusline setting a user writes shows the same text.
    vim.o.laststatus = 2
    vim.o.statusline = "%{v:lua.require'threadsync'.statusline()}"
    vim.cmd('redrawstatus')
    H.eq('TS ✓', vim.api.nvim_eval_statusline(vim.o.statusline, {}).str, 'evaluated statusline')
  end)

  H.case('opening several buffers keeps one client; setup() again reuses it', function()
    local id = ts.get_client().id
    vim.cmd('edit ' .. vim.fn.fnameescape(H.mkdir('files') .. '/a.txt'))
    vim.cmd('edit ' .. vim.fn.fnameescape(H.tmp .. '/files/b.lua'))
    vim.cmd('enew')
    ts.setup(opts)
    ts.start()
    H.eq(1, #vim.lsp.get_clients({ name = 'threadsync', _uninitialized = true }), 'threadsync clients')
    H.eq(id, ts.get_client().id, 'client id')
  end)

  H.case('User ThreadSyncStatus fired with the status data', function()
    local last = events[#events]
    H.ok(last, 'no ThreadSyncStatus event')
    H.eq('synced', last.state, 'event state')
    H.eq(0, last.pending, 'event pending')
    H.ok(last.online == true, 'event online')
    H.eq(ts.status(), last, 'event data = status()')
  end)

  H.case('server killed + a change → statusline "TS offline ↑1"', function()
    thread_id = H.ts_request('threadsync/createThread', { title = 'Outage notes' }).threadId
    H.ts_request('threadsync/appendMessage', { threadId = thread_id, role = 'user', content = 'before' })
    H.wait('thread on the server', 10000, function()
      local t = server:thread(thread_id)
      return t and #t.messages == 1
    end)
    H.wait_statusline('TS ✓')
    server:kill()
    H.ts_request('threadsync/appendMessage', { threadId = thread_id, role = 'user', content = 'while down' })
    H.wait_statusline('TS offline ↑1', 15000)
    local s = ts.status()
    H.eq('offline', s.state, 'state')
    H.eq(1, s.pending, 'pending')
    H.ok(s.online == false, 'online should be false')
    local saw = vim.tbl_filter(function(e)
      return e.state == 'offline' and e.pending == 1
    end, events)
    H.ok(#saw > 0, 'no ThreadSyncStatus event with state offline, pending 1')
    -- The user's status command says the same.
    local text = table.concat(require('threadsync.commands').status_lines(), '\n')
    H.contains(text, 'threadsync: offline', ':ThreadSync status')
    H.contains(text, 'pending:   1', ':ThreadSync status')
    H.contains(text, 'online:    no', ':ThreadSync status')
  end)

  H.case('server back on the same port + db → statusline "TS ✓", 0 pending, change on the server', function()
    server:start()
    H.wait_statusline('TS ✓', 25000)
    H.eq(0, ts.status().pending, 'pending')
    H.wait('message on the server', 5000, function()
      local t = server:thread(thread_id)
      return t and #t.messages == 2 and t.messages[2].content == 'while down'
    end)
  end)

  H.case(':ThreadSync status echoes the full status', function()
    local out = vim.api.nvim_exec2('ThreadSync status', { output = true }).output
    H.contains(out, 'threadsync: synced (TS ✓)', 'status output')
    H.contains(out, 'conflicts: 0', 'status output')
    H.contains(out, 'last sync: 20', 'status output')
    H.contains(out, 'server:    ' .. server.url, 'status output')
    H.ok(not out:find(server.token, 1, true), 'the token must never be shown')
  end)

  H.case(':ThreadSync sync runs forceSync and reports success', function()
    local notes = H.capture_notify()
    vim.cmd('ThreadSync sync')
    H.wait_item('"sync finished" notification', 10000, notes, function(n)
      return n.msg:find('sync finished', 1, true)
    end)
  end)

  H.case(':ThreadSync sync with the server down notifies the error', function()
    server:kill()
    local notes = H.capture_notify()
    vim.cmd('ThreadSync sync')
    H.contains(notes[1] and notes[1].msg or '', 'syncing', 'first notification')
    local n = H.wait_item('"sync failed" error notification', 15000, notes, function(n)
      return n.msg:find('sync failed: ', 1, true) and n.level == vim.log.levels.ERROR
    end)
    H.out('    (user sees: ' .. n.msg .. ')')
  end)

  H.case(':ThreadSync restart replaces the client; status comes back', function()
    server:start()
    local old = ts.get_client().id
    vim.cmd('ThreadSync restart')
    local new = ts.get_client()
    H.ok(new and new.id ~= old, 'a new client')
    H.eq(1, #vim.lsp.get_clients({ name = 'threadsync', _uninitialized = true }), 'threadsync clients')
    H.wait_statusline('TS ✓', 15000)
  end)

  H.case(':ThreadSync log opens the sidecar log file', function()
    vim.cmd('ThreadSync log')
    H.eq(vim.fs.normalize(opts.log_file), vim.fs.normalize(vim.api.nvim_buf_get_name(0)), 'log buffer')
    H.ok(vim.api.nvim_buf_line_count(0) > 1, 'log has lines')
  end)

  H.case('a refused token → "TS unauthorized"; configure() with a good one → "TS ✓" without restart', function()
    local notes = H.capture_notify()
    ts.setup(vim.tbl_extend('force', opts, { token = function()
      return 'tsk_bogus_token'
    end }))
    H.wait_statusline('TS unauthorized', 10000)
    local id = ts.get_client().id
    ts.configure({ token = server.token })
    H.wait_statusline('TS ✓', 10000)
    H.eq(id, ts.get_client().id, 'same client')
    for _, n in ipairs(notes) do
      H.ok(not n.msg:find(server.token, 1, true), 'token shown in a notification')
    end
  end)

  H.case('stopping the client → statusline "TS stopped"', function()
    ts.stop()
    H.wait_statusline('TS stopped', 5000)
  end)
end)
