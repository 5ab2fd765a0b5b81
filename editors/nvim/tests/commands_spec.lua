-- Options, the command line, statusline texts, lazy loading, help file.
local H = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/helpers.lua')

H.main(function()
  H.load_plugin()

  H.case('loading the plugin defines :ThreadSync and requires nothing heavy', function()
    H.eq(2, vim.fn.exists(':ThreadSync'), ':ThreadSync exists')
    H.eq(nil, package.loaded['threadsync'], 'threadsync module loaded at startup')
    H.eq(nil, package.loaded['threadsync.commands'], 'commands module loaded at startup')
    H.eq(0, #vim.lsp.get_clients({ _uninitialized = true }), 'clients at startup')
  end)

  H.case('completion of ":ThreadSync " gives the six subcommands', function()
    H.eq({ 'sync', 'resolve', 'status', 'threads', 'log', 'restart' }, vim.fn.getcompletion('ThreadSync ', 'cmdline'), 'completion')
    H.eq({ 'resolve', 'restart' }, vim.fn.getcompletion('ThreadSync re', 'cmdline'), 'completion of "re"')
    H.eq({}, vim.fn.getcompletion('ThreadSync sync ', 'cmdline'), 'no second argument completion')
  end)

  H.case(':ThreadSync bogus gives an error naming the subcommands', function()
    local notes = H.capture_notify()
    vim.cmd('ThreadSync bogus')
    H.eq(1, #notes, 'notifications')
    H.eq(vim.log.levels.ERROR, notes[1].level, 'level')
    H.contains(notes[1].msg, 'unknown subcommand "bogus"', 'message')
    H.contains(notes[1].msg, 'sync, resolve, status, threads, log, restart', 'message')
  end)

  H.case('setup() with a bad option errors clearly, naming it', function()
    local ts = require('threadsync')
    local function err_of(opts)
      local ok, err = pcall(ts.setup, opts)
      H.ok(not ok, 'setup(' .. vim.inspect(opts) .. ') should fail')
      return tostring(err)
    end
    local e = err_of({ poll = 5, autostart = false })
    H.contains(e, 'poll', 'poll = 5')
    H.contains(e, 'longpoll', 'poll = 5 says what is expected')
    H.contains(err_of({ poll = 'sometimes', autostart = false }), 'poll', 'poll = "sometimes"')
    H.contains(err_of({ server = 'localhost:7420', autostart = false }), '`server`', 'server without scheme')
    H.contains(err_of({ autostart = 'yes' }), '`autostart`', 'autostart = "yes"')
    H.contains(err_of({ cmd = 'threadsync lsp', autostart = false }), '`cmd`', 'cmd as a string')
    H.contains(err_of({ icons = { synced = 1 }, autostart = false }), 'icons.synced', 'icons.synced = 1')
    H.contains(err_of({ tokn = 'x', autostart = false }), 'unknown option `tokn`', 'typo')
    H.eq(0, #vim.lsp.get_clients({ _uninitialized = true }), 'no client started by a bad setup()')
    -- Good values pass.
    ts.setup({ poll = 'fixed:5', autostart = false })
    ts.setup({ poll = 'adaptive', threadsDir = '/tmp/x', token = function() return 'x' end, autostart = false })
    H.eq('/tmp/x', ts.opts.threads_dir, 'camelCase alias')
  end)

  H.case('binary missing → clear error with the fix, status stopped', function()
    local ts = require('threadsync')
    local notes = H.capture_notify()
    local saved_path = vim.env.PATH
    vim.env.PATH = H.mkdir('emptybin')
    ts.setup({ server = 'http://127.0.0.1:9' })
    vim.env.PATH = saved_path
    H.ok(notes[1], 'a notification')
    H.eq(vim.log.levels.ERROR, notes[1].level, 'level')
    H.contains(notes[1].msg, 'threadsync: binary not found: `threadsync` is not on $PATH', 'message')
    H.contains(notes[1].msg, 'cargo install', 'fix')
    H.contains(notes[1].msg, "setup({ path = ", 'fix')
    H.eq('TS stopped', H.statusline(), 'statusline')
    H.eq(0, #vim.lsp.get_clients({ _uninitialized = true }), 'clients')
  end)

  H.case('statusline text per state (default icons)', function()
    local ts = require('threadsync')
    local icons = require('threadsync.config').defaults.icons
    local cases = {
      { { state = 'synced', pending = 0, conflicts = 0 }, 'TS ✓' },
      { { state = 'syncing', pending = 0, conflicts = 0 }, 'TS ⟳' },
      { { state = 'syncing', pending = 3, conflicts = 0 }, 'TS ⟳ ↑3' },
      { { state = 'pending', pending = 2, conflicts = 0 }, 'TS ↑2' },
      { { state = 'offline', pending = 0, conflicts = 0 }, 'TS offline' },
      { { state = 'offline', pending = 1, conflicts = 0 }, 'TS offline ↑1' },
      { { state = 'conflict', pending = 0, conflicts = 1 }, 'TS ⚠ 1 conflict' },
      { { state = 'conflict', pending = 0, conflicts = 2 }, 'TS ⚠ 2 conflicts' },
      { { state = 'unauthorized', pending = 0, conflicts = 0 }, 'TS unauthorized' },
      { { state = 'error', pending = 0, conflicts = 0 }, 'TS error' },
      { { state = 'starting', pending = 0, conflicts = 0 }, 'TS …' },
      { { state = 'stopped', pending = 0, conflicts = 0 }, 'TS stopped' },
    }
    for _, c in ipairs(cases) do
      H.eq(c[2], ts.format_status(c[1], icons), c[1].state)
    end
  end)

  H.case('icons and statusline.format are configurable; statusline() reads the cache only', function()
    local ts = require('threadsync')
    ts.setup({ autostart = false, icons = { prefix = 'sync:', synced = 'ok', conflict = '!!' } })
    ts._on_status({ state = 'synced', pending = 0, conflicts = 0, online = true })
    H.eq('sync: ok', ts.statusline(), 'custom icons')
    ts._on_status({ state = 'conflict', pending = 0, conflicts = 1, online = true })
    H.eq('sync: !! 1 conflict', ts.statusline(), 'custom icons')
    ts.setup({ autostart = false, statusline = { format = function(s) return '[' .. s.state .. ']' end } })
    H.eq('[conflict]', ts.statusline(), 'custom format')
    H.eq('conflict', ts.status().state, 'status()')
    -- status() is a copy: callers cannot corrupt the cache.
    ts.status().state = 'x'
    H.eq('conflict', ts.status().state, 'status() copy')
    ts.setup({ autostart = false })
    ts._on_status({ state = 'stopped', pending = 0, conflicts = 0, online = false })
  end)

  H.case('commands with no client running say so instead of failing', function()
    local notes = H.capture_notify()
    H.eq(nil, require('threadsync').get_client(), 'client')
    vim.cmd('ThreadSync resolve')
    H.wait('an error notification', 2000, function()
      return notes[1] ~= nil
    end)
    H.contains(notes[1].msg, 'not running', 'message')
    local out = vim.api.nvim_exec2('ThreadSync status', { output = true }).output
    H.contains(out, 'threadsync: stopped (TS stopped)', ':ThreadSync status')
  end)

  H.case('doc/threadsync.txt: :helptags runs cleanly and :help finds the tags', function()
    local dir = H.mkdir('rtp')
    vim.fn.mkdir(dir .. '/doc', 'p')
    vim.fn.writefile(vim.fn.readfile(H.plugin_root .. '/doc/threadsync.txt'), dir .. '/doc/threadsync.txt')
    vim.cmd('helptags ' .. vim.fn.fnameescape(dir .. '/doc'))
    local tags = vim.fn.readfile(dir .. '/doc/tags')
    H.ok(#tags >= 10, 'tags: ' .. #tags)
    vim.opt.rtp:prepend(dir)
    for _, tag in ipairs({ 'threadsync', 'threadsync-setup', 'threadsync-options', ':ThreadSync',
      'threadsync-statusline', 'threadsync-health', 'threadsync-events', 'threadsync.setup()' }) do
      local ok, err = pcall(vim.cmd, 'help ' .. tag)
      H.ok(ok, ':help ' .. tag .. ': ' .. tostring(err))
      H.eq('help', vim.bo.buftype, 'buftype after :help ' .. tag)
      vim.cmd('helpclose')
    end
    local text = table.concat(vim.fn.readfile(dir .. '/doc/threadsync.txt'), '\n')
    H.contains(text, 'Works on Neovim 0.10+ (0.11 recommended)', 'doc')
  end)
end)
