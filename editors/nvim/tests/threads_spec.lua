-- :ThreadSync threads shows each thread's source (the assistant of a session
-- thread) and project; threadsync's own threads show neither, and no empty
-- separators.
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

H.main(function()
  H.load_plugin()
  local commands = require('threadsync.commands')
  local base = { id = 'T-9', title = 'Fix the parser', version = 3, messageCount = 2, state = 'synced' }
  local function thread(o)
    return vim.tbl_extend('force', base, o or {})
  end

  H.case('source names: the known assistants by name, an unknown one as sent, none for none', function()
    H.eq('Claude Code', commands.source_name('claude-code'), 'claude-code')
    H.eq('Codex', commands.source_name('codex'), 'codex')
    H.eq('Gemini', commands.source_name('gemini'), 'gemini')
    H.eq('aider', commands.source_name('aider'), 'unknown source')
    H.eq(nil, commands.source_name(nil), 'nil')
    H.eq(nil, commands.source_name(vim.NIL), 'JSON null')
    H.eq(nil, commands.source_name(''), 'empty')
    H.eq(nil, commands.source_name(42), 'not a string')
  end)

  H.case('format_item: [source · project] after the title, either alone, one line', function()
    H.eq('Fix the parser  [Claude Code · team/api]  (2 messages, synced)  T-9',
      commands.format_thread(thread({ source = 'claude-code', project = 'team/api' })), 'both')
    H.eq('Fix the parser  [Codex · team/api/cli]  (1 message, pending)  T-9',
      commands.format_thread(thread({ source = 'codex', project = 'team/api/cli', messageCount = 1, state = 'pending' })),
      'codex, one message')
    H.eq('Fix the parser  [Gemini]  (2 messages, synced)  T-9', commands.format_thread(thread({ source = 'gemini' })),
      'source alone')
    H.eq('Fix the parser  [~/notes]  (2 messages, synced)  T-9', commands.format_thread(thread({ project = '~/notes' })),
      'project alone')
    H.eq('(untitled)  [Codex · team/ api]  (2 messages, synced)  T-9',
      commands.format_thread(thread({ title = '', source = 'codex', project = 'team/\n api ' })), 'one line')
  end)

  H.case('format_item without source or project: as before, no empty brackets or separators', function()
    for _, t in ipairs({
      thread(),
      thread({ source = vim.NIL, project = vim.NIL }),
      thread({ source = '', project = '  ' }),
    }) do
      local line = commands.format_thread(t)
      H.eq('Fix the parser  (2 messages, synced)  T-9', line, vim.inspect(t))
    end
    H.eq('Fix the parser  (0 messages, synced)  T-9', commands.format_thread(thread({ messageCount = vim.NIL, state = vim.NIL })),
      'JSON nulls')
  end)

  -- Against the real sidecars: a session thread made on another machine.
  local server = H.server()
  local ts = require('threadsync')
  local opts = H.opts(server)
  ts.setup(opts)
  H.wait_statusline('TS ✓')
  local peer = H.peer(server, 'b')
  peer.wait_synced()
  local session_id, own_id = 'T-session-codex-1', nil

  H.case('a session thread from another machine and our own thread: both in the picker, each as it should', function()
    -- An assistant's session on the other machine, as a thread file with
    -- the env the assistant sources write (`source`, `project`).
    vim.fn.mkdir(peer.threads_dir, 'p')
    vim.fn.writefile({ vim.json.encode({
      id = session_id,
      v = 0,
      created = 1732460000000,
      title = 'CLI flags',
      messages = { { id = 'm-s1', role = 'user', content = 'add --verbose', timestamp = 1732460001000 } },
      env = { source = 'codex', project = { repo = 'github.com/team/api', path = 'cli' }, cwd = '/home/u/src/api/cli' },
    }) }, vim.fs.joinpath(peer.threads_dir, session_id .. '.json'))
    H.wait('the peer has the session thread', 10000, function()
      for _, t in ipairs(peer.request('threadsync/listThreads', {}).threads) do
        if t.id == session_id then
          return true
        end
      end
    end)
    peer.wait_synced()
    own_id = H.ts_request('threadsync/createThread', { title = 'Own plan' }).threadId
    H.wait('the session thread in the editor\'s threadsDir', 10000, function()
      local t = H.read_thread(opts.threads_dir, session_id)
      return t and #t.messages == 1
    end)

    local calls = H.stub_select(function()
      return nil
    end)
    vim.cmd('ThreadSync threads')
    H.wait('the thread picker', 5000, function()
      return #calls == 1
    end)
    local by_id = {}
    for i, t in ipairs(calls[1].items) do
      by_id[t.id] = { item = t, line = calls[1].formatted[i] }
    end
    local s = H.ok(by_id[session_id], 'session thread in the picker: ' .. vim.inspect(calls[1].formatted))
    H.eq('codex', s.item.source, 'source from listThreads')
    H.eq('team/api/cli', s.item.project, 'project from listThreads')
    H.contains(s.line, 'CLI flags  [Codex · team/api/cli]  (1 message, ', 'session line')
    H.contains(s.line, session_id, 'session line')

    local own = H.ok(by_id[own_id], 'own thread in the picker: ' .. vim.inspect(calls[1].formatted))
    H.eq(nil, own.item.source, 'own thread: no source')
    H.eq(nil, own.item.project, 'own thread: no project')
    H.ok(own.line:find('^Own plan  %(0 messages, %a+%)  ' .. vim.pesc(own_id) .. '$'), 'own line: ' .. own.line)
    H.ok(not own.line:find('[', 1, true) and not own.line:find('·', 1, true), 'own line: no brackets or separators: ' .. own.line)
  end)

  H.case('choosing the session thread opens its file', function()
    H.stub_select(function(items)
      for i, t in ipairs(items) do
        if t.id == session_id then
          return i
        end
      end
    end)
    vim.cmd('ThreadSync threads')
    local json = vim.fs.normalize(vim.fs.joinpath(opts.threads_dir, session_id .. '.json'))
    local log = vim.fs.normalize(vim.fs.joinpath(opts.threads_dir, session_id .. '.jsonl'))
    H.wait('the session thread\'s file opened', 5000, function()
      local name = vim.fs.normalize(vim.api.nvim_buf_get_name(0))
      return name == json or name == log
    end, function()
      return vim.api.nvim_buf_get_name(0)
    end)
    H.contains(table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n'), 'add --verbose', 'opened buffer')
  end)
end)
