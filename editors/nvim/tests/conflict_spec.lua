-- A title conflict, shown in the statusline and resolved with
-- :ThreadSync resolve (keep local) → "Mine" everywhere.
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

H.main(function()
  H.load_plugin()
  local server = H.server()
  local ts = require('threadsync')
  local opts = H.opts(server)
  ts.setup(opts)
  H.wait_statusline('TS ✓')
  local peer = H.peer(server, 'b')
  local id

  H.case('both machines have the thread', function()
    id = H.ts_request('threadsync/createThread', { title = 'Original' }).threadId
    H.wait('the peer has the thread', 10000, function()
      local t = peer.request('threadsync/listThreads', {}).threads
      return #t == 1 and t[1].id == id and t[1].title == 'Original'
    end)
    H.wait_statusline('TS ✓')
  end)

  H.case('a title conflict shows "TS ⚠ 1 conflict"', function()
    -- The editor loses the server (configure() = didChangeConfiguration).
    ts.configure({ server = 'http://127.0.0.1:9' })
    H.wait('editor offline', 10000, function()
      return ts.status().state == 'offline'
    end)
    H.ts_request('threadsync/setTitle', { threadId = id, title = 'Mine' })
    H.wait_statusline('TS offline ↑1')
    peer.request('threadsync/setTitle', { threadId = id, title = 'Theirs' })
    peer.wait_synced()
    H.eq('Theirs', server:thread(id).title, 'server title')
    ts.configure({ server = server.url })
    H.wait_statusline('TS ⚠ 1 conflict', 15000)
    H.eq(1, ts.status().conflicts, 'conflicts')
  end)

  H.case(':ThreadSync resolve shows both sides, keeping local → "Mine" everywhere', function()
    local notes = H.capture_notify()
    local calls = H.stub_select(function(items, formatted, _, n)
      if n == 1 then
        return 1
      end
      for i, item in ipairs(items) do
        if item.choose == 'local' then
          return i
        end
      end
    end)
    vim.cmd('ThreadSync resolve')
    H.wait('two pickers', 5000, function()
      return #calls == 2
    end, function()
      return { calls = calls, notes = notes }
    end)
    H.eq(1, #calls[1].items, 'conflicts offered')
    local first = calls[1].formatted[1]
    H.contains(first, 'title conflict in', 'conflict item')
    H.contains(first, 'Mine', 'conflict item')
    H.contains(first, 'Theirs', 'conflict item')
    H.eq({ 'Keep local: Mine', 'Keep remote: Theirs' }, calls[2].formatted, 'side picker items')
    H.contains(calls[2].prompt, 'base: Original', 'side picker prompt')
    local preview = table.concat(require('threadsync.commands')._preview_lines or {}, '\n')
    H.contains(preview, 'Original', 'preview')
    H.contains(preview, 'Mine', 'preview')
    H.contains(preview, 'Theirs', 'preview')
    H.wait_item('"resolved" notification', 10000, notes, function(n)
      return n.msg:find('resolved: kept local', 1, true)
    end)
    H.wait_statusline('TS ✓', 10000)
    H.eq(0, ts.status().conflicts, 'conflicts')
    H.wait('the other machine has "Mine"', 10000, function()
      return peer.request('threadsync/getThread', { threadId = id }).title == 'Mine'
    end)
    H.eq('Mine', server:thread(id).title, 'server title')
    H.eq('Mine', assert(H.read_thread(opts.threads_dir, id)).title, 'local thread file title')
  end)

  H.case(':ThreadSync resolve with no conflicts says so', function()
    local notes = H.capture_notify()
    vim.cmd('ThreadSync resolve')
    H.wait('"no conflicts" notification', 5000, function()
      return notes[1] and notes[1].msg:find('no conflicts', 1, true)
    end, function()
      return notes
    end)
  end)
end)
