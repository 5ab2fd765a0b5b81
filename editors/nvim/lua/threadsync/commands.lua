-- :ThreadSync {sync|resolve|status|threads|log|restart}
local M = {}

local ts = require('threadsync')
local config = require('threadsync.config')
local protocol = require('threadsync.protocol')

local ERROR, WARN, INFO = vim.log.levels.ERROR, vim.log.levels.WARN, vim.log.levels.INFO

M.subcommands = { 'sync', 'resolve', 'status', 'threads', 'log', 'restart' }

local function errmsg(err)
  if type(err) == 'table' then
    return tostring(err.message or vim.inspect(err))
  end
  return tostring(err)
end

---One line, at most `max` characters.
local function short(v, max)
  max = max or 60
  local s
  if v == nil or v == vim.NIL then
    s = '(deleted)'
  elseif type(v) == 'string' then
    s = v
  else
    s = vim.json.encode(v)
  end
  s = s:gsub('%s+', ' ')
  if vim.fn.strchars(s) > max then
    s = vim.fn.strcharpart(s, 0, max - 1) .. '…'
  end
  return s
end

local function full_lines(v)
  local s
  if v == nil or v == vim.NIL then
    s = '(deleted)'
  elseif type(v) == 'string' then
    s = v
  else
    s = vim.json.encode(v)
  end
  return vim.split(s, '\n', { plain = true })
end

-- ---------------------------------------------------------------------------

function M.sync(thread_id)
  ts.start()
  ts.notify('syncing…')
  ts.execute(protocol.commands.forceSync, thread_id and { thread_id } or {}, function(err)
    if err then
      ts.notify('sync failed: ' .. errmsg(err), ERROR)
    else
      ts.notify('sync finished', INFO)
    end
  end)
end

---The lines :ThreadSync status shows.
---@return string[]
function M.status_lines()
  local s = ts.status()
  local lines = {
    ('threadsync: %s (%s)'):format(s.state, ts.statusline()),
    ('  pending:   %d'):format(s.pending or 0),
    ('  conflicts: %d'):format(s.conflicts or 0),
    ('  online:    %s'):format(s.online and 'yes' or 'no'),
    ('  last sync: %s'):format(s.lastSync or 'never'),
  }
  if s.message then
    table.insert(lines, '  message:   ' .. s.message)
  end
  local server = config.effective(ts.opts, 'server')
  table.insert(lines, '  server:    ' .. server)
  return lines
end

function M.status()
  local lines = M.status_lines()
  local chunks = {}
  for i, l in ipairs(lines) do
    table.insert(chunks, { l .. (i < #lines and '\n' or '') })
  end
  vim.api.nvim_echo(chunks, true, {})
end

---Shows base/local/remote of a conflict in a floating scratch window.
---@return integer? win
local function preview(conflict, title)
  local lines = {
    ('Conflict (%s) in "%s" [%s]'):format(conflict.kind, title, conflict.threadId),
    '',
    '── base ──',
  }
  vim.list_extend(lines, full_lines(conflict.base))
  table.insert(lines, '── local (yours) ──')
  vim.list_extend(lines, full_lines(conflict['local']))
  table.insert(lines, '── remote (server) ──')
  vim.list_extend(lines, full_lines(conflict.remote))
  local buf = vim.api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = 'wipe'
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  local width = math.min(vim.o.columns - 4, 80)
  local height = math.min(#lines, math.max(3, vim.o.lines - 6))
  local ok, win = pcall(vim.api.nvim_open_win, buf, false, {
    relative = 'editor',
    row = 1,
    col = math.max(0, math.floor((vim.o.columns - width) / 2)),
    width = width,
    height = height,
    style = 'minimal',
    border = 'single',
  })
  M._preview_lines = lines
  return ok and win or nil
end

---Lists conflicts, lets the user pick one and a side, resolves it.
function M.resolve()
  ts.request(protocol.requests.listConflicts, {}, function(err, result)
    if err then
      return ts.notify('could not list conflicts: ' .. errmsg(err), ERROR)
    end
    local conflicts = (result or {}).conflicts or {}
    if #conflicts == 0 then
      return ts.notify('no conflicts to resolve')
    end
    ts.request(protocol.requests.listThreads, {}, function(_, threads)
      local titles = {}
      for _, t in ipairs((threads or {}).threads or {}) do
        titles[t.id] = t.title
      end
      local function title_of(c)
        local t = titles[c.threadId]
        return (t and t ~= '') and t or c.threadId
      end
      vim.ui.select(conflicts, {
        prompt = 'threadsync: resolve which conflict?',
        kind = 'threadsync.conflict',
        format_item = function(c)
          return ('%s conflict in "%s": local %q vs remote %q'):format(
            c.kind,
            title_of(c),
            short(c['local'], 30),
            short(c.remote, 30)
          )
        end,
      }, function(c)
        if not c then
          return
        end
        local win = preview(c, title_of(c))
        local choices = {
          { choose = 'local', label = 'Keep local: ' .. short(c['local']) },
          { choose = 'remote', label = 'Keep remote: ' .. short(c.remote) },
        }
        vim.ui.select(choices, {
          prompt = ('threadsync: %s conflict in "%s" (base: %s) — keep which side?'):format(
            c.kind,
            title_of(c),
            short(c.base, 30)
          ),
          kind = 'threadsync.conflict_side',
          format_item = function(item)
            return item.label
          end,
        }, function(choice)
          if win and vim.api.nvim_win_is_valid(win) then
            pcall(vim.api.nvim_win_close, win, true)
          end
          if not choice then
            return
          end
          ts.execute(protocol.commands.resolveConflict, { { conflictId = c.id, choose = choice.choose } }, function(e)
            if e then
              ts.notify('could not resolve the conflict: ' .. errmsg(e), ERROR)
            else
              ts.notify(('conflict in "%s" resolved: kept %s'):format(title_of(c), choice.choose))
            end
          end)
        end)
      end)
    end)
  end)
end

---Opens a thread: its file (`<id>.json`, or the log `<id>.jsonl`) when it is
---in the threads directory, else a readable scratch buffer.
function M.open_thread(id, title)
  local dir = config.effective(ts.opts, 'threadsDir')
  if id:match('^[A-Za-z0-9_-]+$') then
    for _, ext in ipairs({ '.json', '.jsonl' }) do
      local path = vim.fs.joinpath(dir, id .. ext)
      if vim.uv.fs_stat(path) then
        vim.cmd('edit ' .. vim.fn.fnameescape(path))
        return
      end
    end
  end
  ts.request(protocol.requests.getThread, { threadId = id }, function(err, thread)
    if err or type(thread) ~= 'table' then
      return ts.notify('could not open thread ' .. id .. ': ' .. errmsg(err), ERROR)
    end
    local lines = { '# ' .. (thread.title ~= '' and thread.title or title or id), '', 'id: ' .. id, '' }
    for _, m in ipairs(thread.messages or {}) do
      table.insert(lines, '## ' .. tostring(m.role))
      table.insert(lines, '')
      vim.list_extend(lines, full_lines(m.content))
      table.insert(lines, '')
    end
    local buf = vim.api.nvim_create_buf(true, true)
    pcall(vim.api.nvim_buf_set_name, buf, 'threadsync://' .. id)
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    vim.bo[buf].filetype = 'markdown'
    vim.bo[buf].modifiable = false
    vim.api.nvim_set_current_buf(buf)
  end)
end

---The assistants a session thread can come from (`source` in
---threadsync/listThreads), by name.
M.source_names = {
  ['claude-code'] = 'Claude Code',
  codex = 'Codex',
  gemini = 'Gemini',
}

---A string field as one trimmed line; nil when absent (nil or vim.NIL), not a
---string, or blank.
local function one_line(v)
  if type(v) ~= 'string' then
    return nil
  end
  local s = vim.trim((v:gsub('%s+', ' ')))
  return s ~= '' and s or nil
end

---A thread's source as a reader names it ("Claude Code" for `claude-code`);
---one we do not know, as sent; nil for none.
---@param source any
---@return string?
function M.source_name(source)
  local s = one_line(source)
  if not s then
    return nil
  end
  return rawget(M.source_names, s) or s
end

---Where a thread comes from: "Claude Code · team/api", "Codex", "~/notes";
---nil for threadsync's own threads (neither source nor project).
---@param t table a threadsync/listThreads item
---@return string?
function M.thread_origin(t)
  local parts = {}
  local source, project = M.source_name(t.source), one_line(t.project)
  if source then
    table.insert(parts, source)
  end
  if project then
    table.insert(parts, project)
  end
  if #parts == 0 then
    return nil
  end
  return table.concat(parts, ' · ')
end

---How :ThreadSync threads shows a thread:
---`Fix the parser  [Claude Code · team/api]  (3 messages, synced)  T-…`,
---without the brackets for a thread with neither source nor project.
---@param t table a threadsync/listThreads item
---@return string
function M.format_thread(t)
  local title = (type(t.title) == 'string' and t.title ~= '') and t.title or '(untitled)'
  local origin = M.thread_origin(t)
  local n = type(t.messageCount) == 'number' and t.messageCount or 0
  local state = (t.state ~= nil and t.state ~= vim.NIL) and tostring(t.state) or 'synced'
  return ('%s%s  (%d message%s, %s)  %s'):format(
    title,
    origin and ('  [' .. origin .. ']') or '',
    n,
    n == 1 and '' or 's',
    state,
    tostring(t.id)
  )
end

function M.threads()
  ts.request(protocol.requests.listThreads, {}, function(err, result)
    if err then
      return ts.notify('could not list threads: ' .. errmsg(err), ERROR)
    end
    local threads = (result or {}).threads or {}
    if #threads == 0 then
      return ts.notify('no threads yet')
    end
    vim.ui.select(threads, {
      prompt = 'threadsync: open thread',
      kind = 'threadsync.thread',
      format_item = M.format_thread,
    }, function(t)
      if t then
        M.open_thread(t.id, t.title)
      end
    end)
  end)
end

function M.log()
  local path = ts.log_file()
  if path and vim.uv.fs_stat(path) then
    vim.cmd('split ' .. vim.fn.fnameescape(path))
    return
  end
  local lsp_log = vim.lsp.get_log_path and vim.lsp.get_log_path() or nil
  if path then
    ts.notify(('no sidecar log yet at %s; opening the LSP log (%s)'):format(path, tostring(lsp_log)), WARN)
  else
    ts.notify('the sidecar log file is off (log_file = false); opening the LSP log', WARN)
  end
  if lsp_log then
    vim.cmd('split ' .. vim.fn.fnameescape(lsp_log))
  end
end

function M.restart()
  local id = ts.restart()
  if id then
    ts.notify('restarted (client ' .. id .. ')')
  end
end

---Entry point of :ThreadSync.
---@param args string[]
function M.run(args)
  local sub = args[1] or 'status'
  local fn = ({
    sync = function()
      M.sync(args[2])
    end,
    resolve = M.resolve,
    status = M.status,
    threads = M.threads,
    log = M.log,
    restart = M.restart,
  })[sub]
  if not fn then
    ts.notify(
      ('unknown subcommand %q; use one of: %s'):format(sub, table.concat(M.subcommands, ', ')),
      ERROR
    )
    return
  end
  fn()
end

return M
