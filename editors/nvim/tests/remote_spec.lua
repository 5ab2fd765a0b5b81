-- A change made on another machine (an independent sidecar) reaches the
-- editor: thread file, User ThreadSyncThreadUpdated, :ThreadSync threads.
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

H.main(function()
  H.load_plugin()
  local server = H.server()
  local ts = require('threadsync')
  local opts = H.opts(server)
  local updates = H.capture_event('ThreadSyncThreadUpdated')
  ts.setup(opts)
  H.wait_statusline('TS ✓')
  local peer = H.peer(server, 'b')
  peer.wait_synced()
  local id

  H.case('a thread created + appended on another machine arrives as a file', function()
    id = peer.request('threadsync/createThread', { title = 'Remote plan' }).threadId
    peer.request('threadsync/appendMessage', { threadId = id, role = 'user', content = 'hello from B' })
    H.wait('thread file (a log) with the message in the editor\'s threadsDir', 10000, function()
      local t = H.read_thread(opts.threads_dir, id)
      return t and t.title == 'Remote plan' and #t.messages == 1 and t.messages[1].content == 'hello from B'
    end)
  end)

  H.case('User ThreadSyncThreadUpdated fired with origin remote', function()
    local u = H.wait_item('remote ThreadSyncThreadUpdated for the thread', 5000, updates, function(u)
      return u.threadId == id and u.origin == 'remote' and u.messageCount == 1
    end)
    H.eq('Remote plan', u.title, 'title in the event')
  end)

  H.case(':ThreadSync threads lists it and opens its file', function()
    local calls = H.stub_select(function(_, formatted)
      for i, f in ipairs(formatted) do
        if f:find('Remote plan', 1, true) then
          return i
        end
      end
    end)
    vim.cmd('ThreadSync threads')
    H.wait('the thread picker', 5000, function()
      return #calls == 1
    end)
    local shown = table.concat(calls[1].formatted, '\n')
    H.contains(shown, 'Remote plan', 'picker items')
    H.contains(shown, '1 message', 'picker items')
    H.contains(shown, id, 'picker items')
    local want = vim.fs.normalize(vim.fs.joinpath(opts.threads_dir, id .. '.jsonl'))
    H.wait('the thread file opened', 5000, function()
      return vim.fs.normalize(vim.api.nvim_buf_get_name(0)) == want
    end, function()
      return vim.api.nvim_buf_get_name(0)
    end)
    H.contains(table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n'), 'hello from B', 'opened buffer')
  end)

  H.case('a thread whose file is elsewhere opens as a readable scratch buffer', function()
    local saved = ts.opts.threads_dir
    ts.opts.threads_dir = H.mkdir('elsewhere')
    require('threadsync.commands').open_thread(id, 'Remote plan')
    ts.opts.threads_dir = saved
    H.wait('scratch buffer', 5000, function()
      return vim.api.nvim_buf_get_name(0):find('threadsync://' .. id, 1, true)
    end)
    local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    H.eq('# Remote plan', lines[1], 'heading')
    H.contains(table.concat(lines, '\n'), '## user\n\nhello from B', 'messages')
    H.eq('markdown', vim.bo.filetype, 'filetype')
  end)

  H.case('a local change (through the plugin) reaches the other machine; event origin local', function()
    ts.request('threadsync/appendMessage', { threadId = id, role = 'assistant', content = 'reply from A' }, function() end)
    H.wait_item('local ThreadSyncThreadUpdated', 5000, updates, function(u)
      return u.threadId == id and u.origin == 'local' and u.messageCount == 2
    end)
    H.wait('the peer has the reply', 10000, function()
      local t = peer.request('threadsync/getThread', { threadId = id })
      return #t.messages == 2 and t.messages[2].content == 'reply from A'
    end)
  end)
end)
